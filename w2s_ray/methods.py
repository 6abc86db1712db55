"""Methods as short recipes over the shared stages; each returns the model to evaluate.

Artifacts are content-addressed, so a recipe that asks for a stage another recipe (or another
trial) already built gets it back instead of retraining: the weak model is trained once per
(weak rung, capabilities, seed) and serves every strong rung.
"""

from __future__ import annotations

from collections.abc import Callable

from w2s_ray.artifacts import Artifact
from w2s_ray.stages import data
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.generate import generate
from w2s_ray.stages.train import sft

Recipe = Callable[[StageContext, str, str], ModelRef]
METHODS: dict[str, Recipe] = {}


def method(name: str) -> Callable[[Recipe], Recipe]:
    def register(fn: Recipe) -> Recipe:
        METHODS[name] = fn
        return fn

    return register


def weak_model(ctx: StageContext, weak: str) -> ModelRef:
    labeled = data.split_table(ctx, "labeled", with_gold_labels=True)
    return ctx.model(sft(ctx, ctx.base(weak), labeled, tag="weak"))


def weak_labels(ctx: StageContext, weak: str) -> Artifact:
    """D̄^b: the weak model's greedy outputs on D^b's prompts (gold never read)."""
    prompts = data.split_table(ctx, "unlabeled", with_gold_labels=False)
    return generate(ctx, weak_model(ctx, weak), prompts, tag="weak_labels")


@method("weak")
def weak(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    return weak_model(ctx, weak)


@method("wts")
def wts(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    return ctx.model(sft(ctx, ctx.base(strong), weak_labels(ctx, weak), tag="wts"))


@method("ceiling")
def ceiling(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    gold = data.split_table(ctx, "unlabeled", with_gold_labels=True)
    return ctx.model(sft(ctx, ctx.base(strong), gold, tag="ceiling"))


@method("strong-base")
def strong_base(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """The strong base untrained: how much of the ceiling the prompt alone already elicits."""
    return ctx.base(strong)
