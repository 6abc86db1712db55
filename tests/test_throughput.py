"""The run's own throughput table and its tracking: a tiny sweep writes throughput.csv and its
report section, and sends each trial's metrics and the final tables to a real MLflow file store."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from w2s_ray import plan, throughput
from w2s_ray.config import load_config
from w2s_ray.models import checkpointing, speed
from w2s_ray.stages import fetch

ROOT = Path(__file__).resolve().parents[1]


def test_figures_divide_summed_counts_and_leave_mfu_empty_on_cpu():
    a = speed.measured("training", "t1", 1000, "cpu", 1, 2.0, 10, trained_tokens=300, padded_tokens=400)
    b = speed.measured("training", "t1", 1000, "cpu", 1, 1.0, 5, trained_tokens=150, padded_tokens=200)
    got = speed.figures(speed.combined([a, b]))
    assert got["tokens_per_s"] == 450 / 3.0 and got["samples_per_s"] == 5.0
    assert got["padding_share"] == pytest.approx(0.25) and got["mfu"] is None
    gpu = speed.measured("training", "7b", 7e9, "NVIDIA A100-SXM4-80GB", 8, 10.0, 40, trained_tokens=12000,
                            padded_tokens=12000)
    assert speed.figures(gpu)["mfu"] == pytest.approx(6 * 7e9 * 12000 / (80 * 312e12))
    assert speed.peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and speed.peak_flops("cpu") is None


def test_the_dry_run_takes_measured_rates_and_counts_checkpoints(tmp_path):
    config = fetch.pin_revisions(load_config("qwen15-scale", {
        "storage": str(tmp_path / "store"), "pairs": [["0.5b", "1.8b"]], "methods": ["weak", "ceiling"]}),
        fetch.planned_revision)
    stage = next(s for s in plan.plan_stages(config) if s["stage"] == "sft" and s["rung"] == "1.8b")
    _, assumed_h = plan.cost(config, stage)
    n = plan.rows(config, stage)[0]
    hp = plan.training_recipe(plan.layout.resolve(config, "1.8b"), stage)
    # Half the assumed rate and the assumed tokens per row: twice the hours.
    rate = throughput.assumed("training", plan.layout.resolve(config, "1.8b").arch.params)[0] / 2
    pd.DataFrame([{"stage": "sft", "rung": "1.8b", "samples": 100, "trained_tokens": 100 * plan.TRAIN_TOKENS,
                   "tokens_per_device_s": rate}]).to_csv(tmp_path / "throughput.csv", index=False)
    measured = config.model_copy(update={"sweep": config.sweep.model_copy(
        update={"measured_throughput": str(tmp_path / "throughput.csv")})})
    assert plan.cost(measured, stage)[1] == pytest.approx(2 * assumed_h, rel=1e-6)
    report = plan.dry_run(measured)
    assert "measured in" in report and "sft 1.8b" in report and "ckpts" in report
    steps, per_epoch = plan.steps_of(n, hp)
    made = checkpointing.count(hp, steps, per_epoch)
    assert made == (0 if steps < hp.checkpoint_min_steps else (steps - 1) // per_epoch)
    short = hp.model_copy(update={"checkpoint_min_steps": steps + 1, "num_workers": 2})
    assert checkpointing.count(short, steps, per_epoch) == 0
    every = hp.model_copy(update={"checkpoint_min_steps": 0, "checkpoint_every": 7, "num_workers": 2})
    assert checkpointing.count(every, 50, 25) == 7


@pytest.mark.slow
def test_a_tiny_sweep_writes_its_throughput_and_sends_metrics_to_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the sweep sets for a folder

    storage, tracked = tmp_path / "store", tmp_path / "mlruns"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), "--preset", "smoke", "--storage", str(storage),
         "--methods", "weak", "ceiling", "--set", "capabilities=[scan]", "--set", "pairs=[[t1, t2]]",
         "--set", f"tracking.mlflow={tracked}"],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = storage / "sweeps" / "smoke" / "results"
    speed = pd.read_csv(results / "throughput.csv")
    assert {"sft", "generate"} <= set(speed["stage"])
    train = speed[speed["stage"] == "sft"]
    assert (train["trained_tokens"] > 0).all() and (train["tokens_per_s"] > 0).all()
    assert train["mfu"].isna().all() and (train["device"] == "cpu").all()
    generate = speed[speed["stage"] == "generate"]
    assert (generate["generated_tokens"] > 0).all() and (generate["prompt_tokens"] > 0).all()
    assert "<h2 id='throughput'>Throughput</h2>" in (results / "report.html").read_text()
    client = MlflowClient(tracking_uri=tracked.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    trials = [r for r in runs if "acc_weak" in r.data.metrics]
    assert len(trials) == 1 and 0 <= trials[0].data.metrics["acc_ceiling"] <= 1
    tables = next(r for r in runs if r.info.run_name == "smoke tables")
    names = {a.path for a in client.list_artifacts(tables.info.run_id)}
    assert {"pgr.csv", "throughput.csv", "report.html"} <= names


def test_tracking_without_its_library_names_the_field_and_the_extra(monkeypatch, tmp_path):
    import importlib.util

    from w2s_ray import tracking
    from w2s_ray.checks import problem

    config = load_config("tiny", {"tracking.wandb": "offline", "storage": str(tmp_path)})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert "tracking.wandb" in tracking.missing(config) and "w2s-ray[wandb]" in tracking.missing(config)
    assert problem(config) == tracking.missing(config), "refused by the checks the CLI runs before Ray"


def test_the_loop_counts_real_and_padded_token_slots(tiny_checkpoint):
    """One epoch sees every row once: its real tokens are the masks' sum, its slots the padded
    blocks' size, whatever order the batches ran in."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_objective import varied_rows
    from w2s_ray.config import TrainHParams
    from w2s_ray.runtime.encoding import encode_buckets
    from w2s_ray.runtime.tasks import SFTTask
    from w2s_ray.runtime.trainer import optimize

    tok = AutoTokenizer.from_pretrained(f"{tiny_checkpoint}/tokenizer")
    buckets = encode_buckets(tok, varied_rows(16), max_length=64)
    torch.manual_seed(0)
    got = optimize(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), buckets,
                   TrainHParams(batch_size=8, epochs=1, lr=1e-2), seed=0, task=SFTTask())
    assert got["trained_tokens"] == sum(int(b["attention_mask"].sum()) for b in buckets)
    assert got["padded_tokens"] == sum(b["attention_mask"].numel() for b in buckets)
    assert got["padded_tokens"] > got["trained_tokens"], "varied answers pad"
