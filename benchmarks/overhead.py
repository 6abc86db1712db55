"""Ray's overhead on the smoke preset, measured side by side in one run.

    python benchmarks/overhead.py

Prints (1) the sweep's wall time divided by the sum of its stages' compute time (the time spent
inside the training loops and inside `generate`), and (2) Ray Train samples/s divided by a plain
torch loop's on the same model and data, for Ray Train's local mode (the tiny presets' setting)
and for a one-worker Ray Train worker group (the default before local mode).
"""

from __future__ import annotations

import logging
import tempfile
import time

import ray
import torch
from transformers import AutoModelForCausalLM

from w2s_ray.artifacts import Builder, StageLog, Store, lease_book
from w2s_ray.config import load_config
from w2s_ray.models import tiny_ladder
from w2s_ray.models.ladder import publish_tiny_ladder
from w2s_ray.models.tokenizer import load_tokenizer
from w2s_ray.stages import data
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.train import encode_buckets, optimize, sft
from w2s_ray.sweep import run_sweep


def sweep_overhead(root: str) -> tuple[float, float]:
    config = load_config("smoke", {"storage": root, "name": "overhead"})
    start = time.perf_counter()
    stage_log = run_sweep(config).stage_log
    wall = time.perf_counter() - start
    built = stage_log[stage_log["status"] == "built"]
    return wall, float(built["compute_seconds"].fillna(0).sum())


def train_throughputs(root: str) -> dict[str, float]:
    overrides = {"storage": root, "splits.labeled": 300, "train.epochs": 2, "train.batch_size": 32}
    config = load_config("smoke", overrides)
    store = Store(root)
    builder = Builder(store, StageLog(store, "bench", "bench"), lease_book("bench"), "bench")
    publish_tiny_ladder(store, ["t2"], builder.stage_log)
    ctx = StageContext(config, store, builder, seed=0)
    base = ctx.base("t2")
    table = data.split_table(ctx, "labeled", with_gold_labels=True)
    rows = data.read(ctx, table)
    hp = config.train

    start = time.perf_counter()
    torch.set_num_threads(hp.torch_threads)
    tok = load_tokenizer(base.source)
    model = AutoModelForCausalLM.from_pretrained(base.source, dtype=torch.float32)
    stats = optimize(model, encode_buckets(tok, rows, hp.max_length), hp, seed=0)
    rates = {"plain torch loop": stats["samples"] / (time.perf_counter() - start)}
    for name, workers in (("Ray Train local mode (num_workers=0)", 0),
                          ("Ray Train worker group (num_workers=1)", 1)):
        ctx.config = config.model_copy(update={"train": hp.model_copy(update={"num_workers": workers})})
        ctx.seed = 100 + workers  # a distinct artifact, so it trains rather than reuses
        start = time.perf_counter()
        sft(ctx, base, table)
        rates[name] = stats["samples"] / (time.perf_counter() - start)
    return rates


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="w2s_ray")
    tiny_ladder.build_ladder(["t1", "t2"])
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        wall, compute = sweep_overhead(a)
        rates = train_throughputs(b)
    print("\n== Ray overhead, smoke preset (one run) ==")
    print(f"sweep wall time {wall:.1f}s / sum of stage compute {compute:.1f}s = {wall / compute:.1f}x")
    plain = rates.pop("plain torch loop")
    print(f"plain torch loop: {plain:.1f} samples/s (model load + encode + loop)")
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} samples/s = {rate / plain:.2f} of the plain loop")


if __name__ == "__main__":
    main()
