"""The optimisation loop every fine-tuning stage runs, apart from whoever launches it.

It sees a model (wrapped by `parallel`), encoded buckets, the hyper-parameters, this process's
rank, the world size and device, and optionally something that resumes and reports checkpoints
(`checkpoints.RayTrainCheckpoints` under Ray Train). It imports neither Ray nor vLLM: the GPU
check runs it on a machine that has neither.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import torch

from w2s_ray.config import TrainHParams
from w2s_ray.models import checkpointing
from w2s_ray.runtime import parallel
from w2s_ray.runtime.encoding import Buckets
from w2s_ray.runtime.tasks import SFTTask


class Checkpoints(Protocol):
    def save(self, model, opt, sched, progress: dict[str, Any], metrics: dict[str, Any]) -> None: ...

    def restore(self, model, opt, sched) -> dict[str, Any] | None: ...


def batch_plan(sizes: list[int], batch_size: int, epochs: float,
               gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """(bucket, row indices) per step: each epoch shuffles rows within buckets, cuts them into
    batches, and shuffles the batches across buckets. Every rank computes the same plan, and it
    does not depend on the number of ranks, so a model's key need not name its layout."""
    one_epoch = sum(max(1, -(-n // batch_size)) for n in sizes)
    steps = max(1, math.ceil(epochs * one_epoch))
    plan: list[tuple[int, torch.Tensor]] = []
    while len(plan) < steps:
        epoch = [(b, chunk) for b, n in enumerate(sizes)
                 for chunk in torch.randperm(n, generator=gen).split(batch_size)]
        plan += [epoch[i] for i in torch.randperm(len(epoch), generator=gen).tolist()]
    return plan[:steps]


def lr_factor(hp: TrainHParams, steps: int):
    """Warmup, then cosine / linear decay or constant: the multiplier of step `step`."""
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

    return factor


def optimize(model, buckets: Buckets, hp: TrainHParams, seed: int, rank: int = 0,
             world: int = 1, task=None, checkpoints: Checkpoints | None = None,
             dev: torch.device | None = None) -> dict[str, float]:
    """The optimisation loop: AdamW, warmup then decay; each step's global batch is split over
    workers, then over `grad_accum` micro-batches, so it stays `batch_size` rows exactly, and its
    loss is the task's over the whole global batch (`task.total` normalises every micro-batch's
    sum), so neither the split nor the world size changes what is optimised. With
    `checkpoints`, a resumable checkpoint is saved as `models/checkpointing.py` decides (none
    for a short stage, else every `checkpoint_every` steps or epoch) and a restarted run
    continues from the last one: the batch plan is a function of the seed."""
    task = task or SFTTask()
    dev = dev or torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    sizes = [len(b["input_ids"]) for b in buckets]
    plan = batch_plan(sizes, hp.batch_size, hp.epochs, gen)
    steps = len(plan)
    every = checkpointing.interval(hp, steps, math.ceil(steps / math.ceil(hp.epochs)))
    # foreach=False, the loop torch already runs on CPU: on CUDA its default (foreach) would hold
    # a temporary copy of every parameter during the step, 14 GB per GPU in the 72B plan.
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(hp, steps))
    done = (checkpoints.restore(model, opt, sched) if checkpoints else None) or {
        "step": 0, "losses": [], "samples": 0, "compute_seconds": 0.0}
    resumed_at, resume_reads = done["step"], done.pop("resume_reads", None)
    # Counted on the whole global batch, so every rank has the same figures without a collective.
    done.setdefault("trained_tokens", 0)
    done.setdefault("padded_tokens", 0)
    start = time.perf_counter() - done["compute_seconds"]
    model.train()
    for step in range(done["step"], steps):
        bucket, idx = plan[step]
        mine = idx.tensor_split(world)[rank]
        # Every rank runs the same number of micro-batches (FSDP gathers weights per forward),
        # a rank without rows of a batch smaller than the world a zero-weighted one; each row
        # weighs 1/len(idx) once DDP / FSDP average the ranks' gradients.
        parts = max(1, min(hp.grad_accum, len(idx) // world))
        rows = mine if len(mine) else idx[:1]
        total = task.total({k: v[idx] for k, v in buckets[bucket].items()}).to(dev)
        micros = rows.tensor_split(parts)
        # A task whose targets depend on the whole global batch (the confidence loss's prior)
        # makes them before the step's first micro-batch: per row of this rank's micro-batches.
        extra = (task.prepare(model, buckets[bucket], idx, list(micros), world, dev, step / steps, hp)
                 if hasattr(task, "prepare") else {})
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for i, at in enumerate(torch.arange(len(rows)).tensor_split(parts)):
            batch = {k: v[rows[at]].to(dev) for k, v in buckets[bucket].items()}
            batch.update({k: v[at].to(dev) for k, v in extra.items()})
            with parallel.gradient_sync(model, i == parts - 1), parallel.autocast(hp, dev):
                loss = task.loss(model, batch, total)
                # DDP and FSDP average the ranks' gradients: times `world`, they sum them.
                (loss * (world if len(mine) else 0.0)).backward()
            step_loss += loss.item() if len(mine) else 0.0
        step_loss = parallel.summed(step_loss, world, dev)
        if hp.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
        opt.step()
        sched.step()
        done["losses"].append(step_loss)
        done["samples"] += len(idx)
        mask = buckets[bucket]["attention_mask"][idx]
        done["trained_tokens"] += int(mask.sum())
        done["padded_tokens"] += mask.numel()
        done["step"] = step + 1
        if checkpoints and every and (done["step"] % every == 0) and done["step"] < steps:
            done["compute_seconds"] = time.perf_counter() - start
            checkpoints.save(model, opt, sched, done, {"step": done["step"], "loss": step_loss})
    return {"steps": steps, "rows": sum(sizes), "samples": done["samples"],
            "first_loss": done["losses"][0], "final_loss": done["losses"][-1],
            "losses": done["losses"], "resumed_at_step": resumed_at, "resume_reads": resume_reads,
            "trained_tokens": done["trained_tokens"], "padded_tokens": done["padded_tokens"],
            "compute_seconds": time.perf_counter() - start}


def toward_base(model, base: dict[str, torch.Tensor], share: float) -> None:
    """Move every weight `share` of the way back to the base's. Parameters, not the state dict:
    tied embeddings are one parameter under two state-dict names and must move once."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.lerp_(base[name].to(p.device), share)
