"""Burns et al.'s auxiliary confidence loss, and a gold-free filter of the weak labels by the weak
model's own confidence: strong students trained from the base on D̄^b, each a variant of wts."""

from __future__ import annotations

from w2s_ray.methods.pipeline import weak_labels, weak_model
from w2s_ray.methods.registry import method
from w2s_ray.stages.confidence import label_confidence
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.select import most_confident
from w2s_ray.stages.tables import derive
from w2s_ray.stages.train import sft


@method("wts-aux-conf")
def wts_aux_conf(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """The strong base on D̄^b with the auxiliary confidence loss (`aux_conf`; runtime/tasks.py)."""
    spec = ctx.config.aux_conf
    loss = {"name": "logconf", "weight": spec.weight, "warmup": spec.warmup}
    return ctx.model(sft(ctx, ctx.base(strong), weak_labels(ctx, weak), tag="wts-aux-conf", loss=loss))


@method("confident-filter")
def confident_filter(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """The strong base on the weak labels the weak model is most confident of (no gold read).

    Per capability, the top `confident_filter.share` by the weak model's mean log-probability
    per label token (`stages/confidence.py`)."""
    share = ctx.config.confident_filter.share
    scored = label_confidence(ctx, weak_model(ctx, weak), weak_labels(ctx, weak))
    kept = derive(ctx, "confident", 1, [scored], {"share": share}, lambda df: most_confident(df, share))
    return ctx.model(sft(ctx, ctx.base(strong), kept, tag="confident-filter"))
