"""The training memory estimate against the peak memory of real training steps on this CPU."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from w2s_ray.models.resources import ARCHS, PLANS, train_memory_gb

ROOT = Path(__file__).resolve().parents[1]


def benchmark():
    spec = importlib.util.spec_from_file_location("memory_benchmark", ROOT / "benchmarks" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_estimate_is_within_25_percent_of_measured_peak_memory():
    bench = benchmark()
    # Two fresh processes at once: each measures only its own peak.
    table = bench.compare(bench.QUICK, threads=1, jobs=2)
    ratios = table["estimate / measured"]
    assert ((ratios - 1).abs() <= 0.25).all(), table.to_string()


@pytest.mark.parametrize("size", ["0.5b", "7b", "72b"])
def test_tokens_scale_activations_and_logits_and_shards_divide_the_states(size):
    arch, plan = ARCHS[size], PLANS[size].train
    one = train_memory_gb(arch, plan)
    double = train_memory_gb(arch, replace(plan, micro_batch=2 * plan.micro_batch))
    for part in ("activations", "logits"):
        assert double[part] == pytest.approx(2 * one[part])
    shards = plan.workers if plan.strategy == "fsdp" else 1
    assert double["weights"] == one["weights"] == pytest.approx(4 * arch.params / shards / 1e9)
    assert one["adam"] == pytest.approx(2 * one["weights"])


@pytest.mark.slow
def test_every_rank_of_a_multi_rank_fsdp_run_is_within_the_band_of_its_estimate():
    """The smallest multi-rank rows of the benchmark: a narrow Qwen2 (one layer, a 16K vocabulary)
    trained by 2 and by 4 gloo processes under FSDP2 through the project's loop, each rank's peak
    against the estimate, whose gathered head and reduce buffers are most of it."""
    bench = benchmark()
    rows = [bench.Ranked("narrow", 1, world) for world in (2, 4)]
    table = bench.compare_ranked(rows)
    assert list(table["rank"]) == [0, 1, 0, 1, 2, 3]
    assert table["reduce buffers"].gt(0).all() and table["root unit gathered"].gt(0).all()
    assert table["estimate / measured"].between(0.8, 1.25).all(), table.to_string()
