"""Fine-tuning through Ray Train's TorchTrainer: causal-LM SFT (loss on answer tokens only) and,
with another `Task`, the reward model's classification training (stages/reward.py).

`train.num_workers: 0` runs Ray Train's local mode: the same `ray.train` API without a worker
group, in a Ray task that holds `cpus_per_worker` CPUs (a task, not the trial's own process,
because Ray refuses `ray.train` calls inside a Tune session). On this 2-core machine that removes
most of Ray Train's fixed cost per `fit()` (controller, worker-group start, polling; measured in
benchmarks/overhead.py), which the tiny sweep pays dozens of times. `num_workers >= 1` runs the
usual DDP worker group.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from typing import Any

import ray
import ray.train
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from w2s_ray.artifacts import Artifact, Store
from w2s_ray.config import TrainHParams
from w2s_ray.models.tokenizer import load_tokenizer, prompt_ids, save_checkpoint, tokenizer_path
from w2s_ray.stages.context import ModelRef, StageContext, local_model_path
from w2s_ray.stages.data import TABLE

VERSION = 1
OWN_RESOURCES = PlacementGroupSchedulingStrategy(placement_group=None)
METRICS = "train_metrics.json"


def encode(tok, prompts: list[str], labels: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded fixed-shape rows; the loss is masked to the answer tokens and the final EOS."""
    rows, targets = [], []
    for prompt, label in zip(prompts, labels):
        p = prompt_ids(tok, prompt)
        a = tok(label, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = (p + a)[:max_length]
        rows.append(ids)
        targets.append(([-100] * len(p) + a)[:max_length])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    target = torch.full((len(rows), width), -100)
    for i, (r, t) in enumerate(zip(rows, targets)):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        target[i, : len(t)] = torch.tensor(t)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": target}


Buckets = list[dict[str, torch.Tensor]]


def encode_buckets(tok, df, max_length: int) -> Buckets:
    """One fixed-shape block per capability: a batch never mixes capabilities, so short answers
    do not pay for the longest capability's width, and the few distinct shapes keep CPU kernels
    warm (a new shape per batch was measured ~4x slower)."""
    return [encode(tok, g["prompt"].tolist(), g["label_text"].tolist(), max_length)
            for _, g in df.groupby("capability", sort=True)]


def batch_plan(sizes: list[int], batch_size: int, epochs: float, world: int,
               gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """(bucket, row indices) per step: each epoch shuffles rows within buckets, cuts them into
    batches, and shuffles the batches across buckets. Every rank computes the same plan."""
    one_epoch = sum(max(1, -(-n // batch_size)) for n in sizes)
    steps = max(1, math.ceil(epochs * one_epoch))
    plan: list[tuple[int, torch.Tensor]] = []
    while len(plan) < steps:
        epoch = [(b, chunk) for b, n in enumerate(sizes)
                 for chunk in torch.randperm(n, generator=gen).split(batch_size) if len(chunk) >= world]
        plan += [epoch[i] for i in torch.randperm(len(epoch), generator=gen).tolist()]
    return plan[:steps]


def lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def optimize(model, buckets: Buckets, hp: TrainHParams, seed: int, rank: int = 0,
             world: int = 1, loss_fn=lm_loss) -> dict[str, float]:
    """The optimisation loop itself: AdamW, warmup then cosine/linear decay, global batch split over workers."""
    gen = torch.Generator().manual_seed(seed)
    plan = batch_plan([len(b["input_ids"]) for b in buckets], hp.batch_size, hp.epochs, world, gen)
    steps = len(plan)
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    warmup = int(hp.warmup_fraction * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        if hp.schedule == "constant":
            return 1.0
        if hp.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses, samples = [], 0
    start = time.perf_counter()
    model.train()
    for bucket, idx in plan:
        mine = idx.tensor_split(world)[rank]
        loss = loss_fn(model, {k: v[mine] for k, v in buckets[bucket].items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        samples += len(idx)
    return {"steps": steps, "rows": sum(len(b["input_ids"]) for b in buckets), "samples": samples,
            "first_loss": losses[0], "final_loss": losses[-1],
            "compute_seconds": time.perf_counter() - start}


class SFTTask:
    """Causal-LM fine-tuning on (prompt, label_text) rows. A task object travels inside the train
    loop's config, so it holds no state beyond what it needs to be rebuilt on a worker."""

    stage, version = "sft", VERSION
    loss = staticmethod(lm_loss)

    def load(self, path: str):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def buckets(self, tok, df, hp: TrainHParams) -> Buckets:
        return encode_buckets(tok, df, hp.max_length)


def train_loop(cfg: dict[str, Any]) -> None:
    task = cfg["task"]
    tc = ray.train.get_context()
    rank, world = tc.get_world_rank(), tc.get_world_size()
    hp = TrainHParams(**cfg["hp"])
    torch.set_num_threads(hp.torch_threads)
    torch.manual_seed(cfg["seed"])
    store = Store(cfg["root"])
    path = local_model_path(cfg["root"], cfg["source"], cfg["is_artifact"])
    tok = load_tokenizer(path)
    model = task.load(path)
    if world > 1:
        model = ray.train.torch.prepare_model(model)
    df = store.read_table(cfg["data"])
    metrics = optimize(model, task.buckets(tok, df, hp), hp, cfg["seed"], rank, world, task.loss)
    if rank == 0:
        trained = model.module if hasattr(model, "module") else model
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(trained, tok, tmp, own_subfolder=tokenizer_path(path) != path)
            with open(f"{tmp}/{METRICS}", "w") as f:
                json.dump(metrics, f)
            store.upload_dir(tmp, cfg["out"])
    ray.train.report(metrics)


def fit(cfg: dict[str, Any], hp: TrainHParams, run: RunConfig) -> None:
    scaling = ScalingConfig(num_workers=hp.num_workers, use_gpu=hp.use_gpu,
                            resources_per_worker={"CPU": hp.cpus_per_worker})
    TorchTrainer(train_loop, train_loop_config=cfg, scaling_config=scaling, run_config=run).fit()


@ray.remote
def _fit_local(cfg: dict[str, Any], run: RunConfig) -> None:
    fit(cfg, TrainHParams(**cfg["hp"]), run)


def train(ctx: StageContext, base: ModelRef, data: Artifact, task, hp: TrainHParams | None = None,
          tag: str = "train") -> Artifact:
    """Train `base` on the rows of `data` with `task`; returns the model artifact."""
    hp = hp or ctx.config.train
    # Worker layout does not change the result's identity; the optimisation recipe does.
    identity = hp.model_dump(exclude={"num_workers", "cpus_per_worker", "use_gpu", "torch_threads"})
    art = Artifact.make(task.stage, task.version, [base.id, data.id], {"hp": identity, "seed": ctx.seed})

    def build(folder: str) -> dict:
        rows = len(ctx.store.read_table(f"{ctx.store.location(data)}/{TABLE}"))
        if rows == 0:
            raise ValueError(f"{tag}: the training table {data.id} is empty; nothing to train on")
        cfg = {"root": ctx.store.root, "source": base.source, "is_artifact": base.artifact is not None,
               "data": f"{ctx.store.location(data)}/{TABLE}", "out": folder, "hp": hp.model_dump(),
               "seed": ctx.seed, "task": task}
        run = RunConfig(name=f"{task.stage}-{art.key}", storage_path=ctx.store.uri("ray_train"))
        if hp.num_workers == 0:
            # Outside the trial's placement group: the trial itself reserves almost nothing.
            local = _fit_local.options(num_cpus=hp.cpus_per_worker, scheduling_strategy=OWN_RESOURCES)
            ray.get(local.remote(cfg, run))
        else:
            fit(cfg, hp, run)
        with ctx.store.fs.open_input_stream(f"{folder}/{METRICS}") as f:
            return json.loads(f.read())

    return ctx.builder.ensure(art, build, tag=tag, base=base.id, data=data.id)


def sft(ctx: StageContext, base: ModelRef, data: Artifact, hp: TrainHParams | None = None,
        tag: str = "sft") -> Artifact:
    """Fine-tune `base` on the (prompt, label_text) rows of `data`; returns the model artifact."""
    return train(ctx, base, data, SFTTask(), hp, tag)
