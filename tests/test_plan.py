"""Resource plans per model size and the `--dry-run` report (no Ray, no downloads)."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from w2s_ray.config import RungSpec, load_config, preset_names
from w2s_ray.models import resources
from w2s_ray.models.resources import ARCHS, FIT_GB, PLANS, TrainPlan, train_memory_gb

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_PARAMS = {"0.5b": 0.62e9, "1.8b": 1.84e9, "4b": 3.95e9, "7b": 7.72e9, "14b": 14.2e9,
                    "32b": 32.5e9, "72b": 72.3e9}


@pytest.mark.parametrize("size", list(PLANS))
def test_every_plan_keeps_the_global_batch_and_fits_an_a100_80g(size):
    arch, plan = ARCHS[size], PLANS[size]
    assert arch.params == pytest.approx(PUBLISHED_PARAMS[size], rel=0.01)
    assert plan.train.workers * plan.train.micro_batch * plan.train.grad_accum == 40
    assert train_memory_gb(arch, plan.train)["total"] < FIT_GB
    infer = resources.infer_memory_gb(arch, plan.infer)
    assert infer["max_num_seqs"] >= 32, "the KV cache holds a useful batch of 1024-token sequences"
    assert arch.heads % plan.infer.tensor_parallel == 0 and arch.kv_heads % plan.infer.tensor_parallel == 0


def test_the_estimate_rejects_what_does_not_fit():
    assert train_memory_gb(ARCHS["72b"], TrainPlan(8, "fsdp", 1, 5, True))["total"] > 80
    assert train_memory_gb(ARCHS["7b"], TrainPlan(1, "ddp", 40, 1, False))["total"] > 80


def test_rungs_find_their_plan_and_the_scale_preset_takes_it():
    assert resources.size_of(RungSpec(name="big", model="Qwen/Qwen1.5-72B")) == "72b"
    assert resources.size_of(RungSpec(name="t1", model="tiny:t1")) is None
    hp = resources.training_hparams(load_config("qwen15-scale").train, "72b")
    assert (hp.num_workers, hp.strategy, hp.grad_accum, hp.mixed_precision) == (20, "fsdp", 2, "bf16")
    with pytest.raises(ValueError, match="!= train.batch_size 32"):
        resources.training_hparams(hp.model_copy(update={"batch_size": 32}), "72b")


def test_dry_run_of_the_scale_grid_is_quick_and_dedup_beats_the_naive_grid(tmp_path):
    start = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), "--preset",
                           "qwen15-scale", "--dry-run", "--storage", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    assert time.time() - start < 120
    out = proc.stdout
    unique, naive_n = map(int, re.search(r"unique stages: (\d+) \(naive grid: (\d+)\)", out).groups())
    dedup = float(re.search(r"deduplicated grid: ([\d.]+)", out).group(1))
    naive = float(re.search(r"naive grid \(every .*\): ([\d.]+)", out).group(1))
    assert unique < naive_n and 0 < dedup < naive
    assert re.search(r"sft +wts +72b +todo +20 GPU fsdp mb1x2 ac", out)
    assert re.search(r"generate +weak_labels +32b +todo +2 GPU vLLM tp2", out)
    assert not (tmp_path / "artifacts").exists(), "a dry run writes nothing"
    # One engine per model: its labels (or relabel) and its test evaluation share it.
    per_stage, stage_h, per_model, model_h = map(float, re.search(
        r"engine starts: one per inference stage (\d+) \(([\d.]+) GPU-h\); engine hosts, one per model "
        r"(\d+) \(([\d.]+) GPU-h\)", out).groups())
    inference = re.findall(r"^(?:generate|reward_scores) ", out, re.MULTILINE)
    assert per_stage == len(inference) and per_model < per_stage and 0 < model_h < stage_h


def test_inference_takes_the_plan_of_the_models_size_and_tiny_rungs_keep_theirs(ray_local, tmp_path):
    from w2s_ray.models.location import ModelRef

    from .test_stages import context

    big = resources.inference_spec(load_config("qwen15-scale").inference, "72b")
    assert (big.tensor_parallel_size, big.gpus_per_actor) == (4, 4.0)
    assert big.concurrency == resources.infer_memory_gb(ARCHS["72b"], PLANS["72b"].infer)["max_num_seqs"]
    ctx = context(tmp_path, **{"inference.plan": True})
    assert ctx.layout(ctx.base("t1").rung).inference == ctx.config.inference
    assert ctx.layout(ModelRef("x", "y").rung).inference == ctx.config.inference


@pytest.mark.parametrize("preset", preset_names())
def test_every_stage_of_every_shipped_preset_fits_its_device_in_the_layout_it_runs(preset):
    from w2s_ray.plan import plan_stages, stage_memory_gb
    from w2s_ray.stages import fetch

    config = fetch.pin_revisions(load_config(preset), lambda rung: "planned")
    over = [(s["stage"], s.get("tag"), s.get("rung"), round(m)) for s in plan_stages(config)
            if (m := stage_memory_gb(config, s)) is not None and m > FIT_GB]
    assert not over, f"{preset}: stages over {FIT_GB:.0f} GB per GPU: {over}"


def test_the_layout_check_sees_what_a_preset_without_plans_would_run():
    from w2s_ray.plan import stage_memory_gb

    config = load_config("qwen15-paper", {"train.plan": False, "train.num_workers": 1,
                                          "train.use_gpu": True, "inference.plan": False,
                                          "inference.gpus_per_actor": 1, "inference.dtype": "float32"})
    wts_7b = {"stage": "sft", "rung": "7b"}
    assert stage_memory_gb(config, wts_7b) > 80, "7B, fp32, micro-batch 40 on one GPU"
    assert stage_memory_gb(config, {"stage": "generate", "rung": "7b"}) < FIT_GB
    planned = load_config("qwen15-paper")
    assert stage_memory_gb(planned, wts_7b) < FIT_GB
