"""Ray's fixed costs on the tiny presets, measured side by side in one run.

    python benchmarks/overhead.py [--preset smoke|tiny]

Prints (1) the sweep's wall time for an empty store, its built stages' summed wall time
divided by their summed compute time (the time inside the training loops and the backends), and
its engine starts (or warm-worker model loads) per model; (2) one generation stage's wall time on
an engine host it starts, on the host kept for a model's next stage (the vLLM / GPU path), and in
tasks on warm workers that keep the model (the CPU transformers path); (3) Ray Train samples/s divided by a plain torch loop's on the same model and data,
for Ray Train's local mode (the tiny presets' setting) and a one-worker worker group, each on a
cold worker process and on a warm one.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import ray
import torch
from transformers import AutoModelForCausalLM

from w2s_ray.artifacts import Builder, StageLog, Store, lease_book
from w2s_ray.capabilities import registry
from w2s_ray.config import load_config
from w2s_ray.ladder.publish import publish_tiny_ladder
from w2s_ray.models.tokenizer import load_tokenizer
from w2s_ray.runtime.backends import TransformersBackend
from w2s_ray.runtime.encoding import encode_buckets
from w2s_ray.runtime.inference import engine_options, max_generation_tokens, model_dataset
from w2s_ray.runtime.trainer import optimize
from w2s_ray.stages import data
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.train import sft
from w2s_ray.sweep import WARM_WORKERS, run_sweep, summarize_engine_starts


def sweep_overhead(root: str, preset: str) -> tuple[float, float, float, dict[str, int]]:
    """(the sweep's wall time, its built stages' summed wall time, their summed compute, engine
    starts or warm-worker loads per model)."""
    config = load_config(preset, {"storage": root, "name": "overhead"})
    start = time.perf_counter()
    result = run_sweep(config)
    wall = time.perf_counter() - start
    built = result.stage_log[result.stage_log["status"] == "built"]
    return (wall, float(built["seconds"].sum()), float(built["compute_seconds"].fillna(0).sum()),
            result.engine_starts)


def train_throughputs(root: str) -> dict[str, float]:
    overrides = {"storage": root, "splits.labeled": 300, "train.epochs": 2, "train.batch_size": 32}
    config = load_config("smoke", overrides)
    store = Store(root)
    builder = Builder(store, StageLog(store, "bench", "bench"), lease_book("bench"), "bench")
    publish_tiny_ladder(builder, ["t2"])
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
        for run in ("first", "second"):
            ctx.seed = len(rates)  # a distinct artifact, so it trains rather than reuses
            start = time.perf_counter()
            sft(ctx, base, table)
            rates[f"{name}, {run} run"] = stats["samples"] / (time.perf_counter() - start)
    return rates


def generation_walls(root: str) -> dict[str, float]:
    """One generation stage's wall: on an engine host it starts, on the host kept from that
    stage, and in tasks on warm workers (the second of two runs)."""
    config = load_config("smoke", {"storage": root, "splits.test": 100})
    store = Store(root)
    builder = Builder(store, StageLog(store, "bench", "bench"), lease_book("bench"), "bench")
    publish_tiny_ladder(builder, ["t1"])
    ctx = StageContext(config, store, builder, seed=0)
    model = ctx.base("t1")
    df = data.read(ctx, data.split_table(ctx, "test", with_gold_labels=True))
    df = df.assign(max_new_tokens=[registry.get(c).max_new_tokens for c in df["capability"]],
                   stop=[registry.get(c).stop for c in df["capability"]])
    inf = config.inference
    options = engine_options(inf, "transformers", max_generation_tokens(df))
    df = df.assign(_row=range(len(df)))
    walls = {}
    for name, in_tasks in (("engine host started", False), ("engine host kept", False),
                           ("warm-worker tasks, first", True), ("warm-worker tasks", True)):
        start = time.perf_counter()
        with model_dataset(ray.data.from_pandas(df), inf, TransformersBackend, model.at(store.root), model.id, options,
                           in_tasks=in_tasks) as ds:
            ds.materialize()
        walls[name] = time.perf_counter() - start
    walls.pop("warm-worker tasks, first")
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke", choices=["smoke", "tiny"])
    preset = parser.parse_args().preset
    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="w2s_ray",
             _system_config=WARM_WORKERS)
    with (tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b,
          tempfile.TemporaryDirectory() as c):
        wall, stages, compute, starts = sweep_overhead(a, preset)
        walls = generation_walls(b)
        rates = train_throughputs(c)
    print(f"\n== Ray overhead, {preset} preset (one run) ==")
    print(f"sweep wall time {wall:.1f}s (ladder cached); built stages' wall {stages:.1f}s / their "
          f"compute {compute:.1f}s = {stages / compute:.2f}x")
    cpus = ray.cluster_resources()["CPU"]
    print(f"CPUs kept computing: their compute / (sweep wall x {cpus:.0f} CPUs) = {compute / (wall * cpus):.2f}")
    print(summarize_engine_starts(starts))
    print("one generation stage (smoke test split, t1): "
          + ", ".join(f"{name} {w:.2f}s" for name, w in walls.items())
          + f"; started / kept = {walls['engine host started'] / walls['engine host kept']:.1f}x")
    plain = rates.pop("plain torch loop")
    print(f"plain torch loop: {plain:.1f} samples/s (model load + encode + loop)")
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} samples/s = {rate / plain:.2f} of the plain loop")


if __name__ == "__main__":
    main()
