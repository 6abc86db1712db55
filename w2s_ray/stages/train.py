"""The fine-tuning stage: a model trained on a table's rows, as an artifact named by the base,
the data, the optimisation recipe and the seed, never by how the work was laid out. How it runs
(Ray Train's worker group or local mode, DDP or FSDP, the loop itself) is `w2s_ray/runtime/`'s.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from w2s_ray.artifacts import Artifact
from w2s_ray.config import TrainHParams
from w2s_ray.models import resources, speed
from w2s_ray.models.location import ModelRef
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.data import TABLE
from w2s_ray.stages.logprobs import logprobs

log = logging.getLogger(__name__)

#: How the work is laid out, not what is computed: excluded from the artifact key.
LAYOUT = {"num_workers", "cpus_per_worker", "use_gpu", "torch_threads", "strategy", "grad_accum",
          "activation_checkpointing", "checkpoint_every", "plan", "checkpoint_min_steps",
          "checkpoint_to"}

Recipe = Literal["train", "stage2", "reward", "dpo"]
#: what a training run trains (`runtime/tasks.py`) -> the version its artifacts' keys name
# sft 2, reward_model 2: a batch never mixes capabilities; the batch plan no longer depends on
# the number of ranks
TASKS = {"sft": 2, "reward_model": 2, "dpo": 1}
#: sequences per training row, where not 1: DPO's chosen and rejected (the memory estimate's)
SEQUENCES = {"dpo": 2}


def identity(hp: TrainHParams) -> dict[str, Any]:
    """The optimisation recipe that names a trained model. fp32 runs omit `mixed_precision`, runs
    without weight averaging `toward_base`, and runs clipped at 1.0 `grad_clip`, so their keys
    stay those of stores written before the fields existed."""
    out = hp.model_dump(exclude=LAYOUT)
    if out["grad_clip"] == 1.0:
        del out["grad_clip"]
    if out["mixed_precision"] == "no":
        del out["mixed_precision"]
    if not out["toward_base"]:
        del out["toward_base"]
    return out


def train(ctx: StageContext, base: ModelRef, data: Artifact, task: str, recipe: Recipe = "train",
          tag: str = "train", anchor: ModelRef | None = None, loss: dict[str, Any] | None = None,
          options: dict[str, Any] | None = None) -> Artifact:
    """Train `base` on the rows of `data` with the task named `task` (`TASKS`, constructed with
    `options`, which its key names when given) and the base rung's `recipe` (its layout,
    `ctx.layout`); returns the model artifact. Weight averaging (`toward_base`) moves back toward
    `anchor`'s weights when given, else the base's. `loss` (`{"name": ..., **its fields}`, a name
    of `runtime.tasks.LOSSES`) replaces the supervised cross-entropy and joins the key; without
    either, the key is what it always was."""
    lay = ctx.layout(base.rung)
    hp = getattr(lay, recipe)
    anchor = anchor if hp.toward_base else None
    inputs = [base.id, data.id] + ([anchor.id] if anchor else [])
    params = {"hp": identity(hp), "seed": ctx.seed} | ({"loss": loss} if loss else {}) \
        | ({"task": options} if options else {})
    art = Artifact.make(task, TASKS[task], inputs, params)
    if base.rung is not None:
        ctx.rungs[art.id] = base.rung

    def build(folder: str) -> dict:
        from w2s_ray.runtime.encoding import length_warnings
        from w2s_ray.runtime.ray_train import run_training
        from w2s_ray.runtime.tasks import LOSSES
        from w2s_ray.runtime.tasks import TASKS as RUNS

        table = f"{ctx.store.location(data)}/{TABLE}"
        if len(ctx.store.read_table(table)) == 0:
            raise ValueError(f"{tag}: the training table {data.id} is empty; nothing to train on")
        root = ctx.store.root
        chosen = dict(loss or {})
        run = LOSSES[chosen.pop("name")](**chosen) if loss else RUNS[task](**(options or {}))
        metrics = run_training(run, base.at(root), table, folder, hp, ctx.seed, f"{task}-{art.key}",
                               anchor.at(root) if anchor else None,
                               resources.training_estimate_gb(lay.arch, hp, SEQUENCES.get(task, 1)))
        for warning in length_warnings(metrics["lengths"], hp.max_length):
            log.warning("%s %s: %s", tag, art.key[:8], warning)
        metrics["throughput"] = speed.measured(
            "training", base.rung, metrics.pop("params"), metrics.pop("device"), metrics.pop("devices"),
            metrics["compute_seconds"], metrics["samples"], trained_tokens=metrics["trained_tokens"],
            padded_tokens=metrics["padded_tokens"])
        log.info("%s %s: %.1f%% of the trained token slots were padding", tag, art.key[:8],
                 100 * speed.figures(metrics["throughput"])["padding_share"])
        return metrics

    # The stage log (and the dry run's costing) names a loss other than cross-entropy.
    return ctx.builder.ensure(art, build, tag=tag, **({"loss": loss["name"]} if loss else {}))


def sft(ctx: StageContext, base: ModelRef, data: Artifact, recipe: Recipe = "train",
        tag: str = "sft", anchor: ModelRef | None = None, loss: dict[str, Any] | None = None) -> Artifact:
    """Fine-tune `base` on the (prompt, label_text) rows of `data`; returns the model artifact."""
    return train(ctx, base, data, "sft", recipe, tag, anchor, loss)


def dpo(ctx: StageContext, base: ModelRef, pairs: Artifact, tag: str = "dpo") -> Artifact:
    """DPO of `base` against itself as the frozen reference on the (prompt, chosen, rejected)
    rows of `pairs`: the reference's log-probabilities are computed once, by an inference stage
    (`stages/logprobs.py`), and travel with the rows; `w2sr.beta` and the `dpo` recipe."""
    with_reference = logprobs(ctx, base, pairs, ["chosen", "rejected"], tag="reference_logprobs")
    return train(ctx, base, with_reference, "dpo", "dpo", tag, options={"beta": ctx.config.w2sr.beta})
