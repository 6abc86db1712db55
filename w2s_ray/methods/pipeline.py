"""The pieces recipes share, per (weak, strong) pair: each call returns a cached artifact.

    D^a --sft--> weak model --generate--> D̄^b (weak labels) --sft--> wts model
    wts model --generate--> D̂^b (strong relabel);  D̄^b vs D̂^b --> consistency partition
    partition --reward model (from the strong base)--> scores --Eq. 8--> selected D̈^b
"""

from __future__ import annotations

from w2s_ray.artifacts import Artifact
from w2s_ray.methods.registry import NotApplicable, Target
from w2s_ray.stages import data
from w2s_ray.stages.consistency import partition
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.generate import generate
from w2s_ray.stages.reward import reward_scores
from w2s_ray.stages.select import select
from w2s_ray.stages.tables import derive, only_capabilities
from w2s_ray.stages.train import sft


def unlabeled_prompts(ctx: StageContext) -> Artifact:
    return data.split_table(ctx, "unlabeled", with_gold_labels=False)


def weak_model(ctx: StageContext, weak: str) -> ModelRef:
    labeled = data.split_table(ctx, "labeled", with_gold_labels=True)
    return ctx.model(sft(ctx, ctx.base(weak), labeled, tag="weak"))


def evaluated_along(ctx: StageContext, method: str, weak: str, strong: str | None = None) -> dict[str, Artifact]:
    """The evaluation split, for a labelling pass to generate along (`generate`'s `along`) when
    the pass's model is the one `method` evaluates: the model of the trial's own pair (`weak`
    alone for the weak model), and the sweep runs `method`."""
    pair = ctx.pair or (None, None)
    if method not in ctx.config.methods or weak != pair[0] or strong not in (None, pair[1]):
        return {}
    return {"evaluate": data.split_table(ctx, "test", with_gold_labels=True)}


def weak_labels(ctx: StageContext, weak: str) -> Artifact:
    """D̄^b: the weak model's greedy outputs on D^b's prompts (gold never read)."""
    return generate(ctx, weak_model(ctx, weak), unlabeled_prompts(ctx), tag="weak_labels",
                    along=evaluated_along(ctx, "weak", weak))


def wts_model(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Burns et al.'s student, and stage 1 (warm-up on all of D̄^b) of the paper's method."""
    return ctx.model(sft(ctx, ctx.base(strong), weak_labels(ctx, weak), tag="wts"))


def relabel(ctx: StageContext, weak: str, strong: str) -> Artifact:
    """D̂^b: the wts model's own labels of D^b."""
    return generate(ctx, wts_model(ctx, weak, strong), unlabeled_prompts(ctx), tag="relabel",
                    along=evaluated_along(ctx, "wts", weak, strong))


def consistency(ctx: StageContext, weak: str, strong: str) -> Artifact:
    return partition(ctx, weak_labels(ctx, weak), relabel(ctx, weak, strong))


def scores(ctx: StageContext, weak: str, strong: str) -> Artifact:
    return reward_scores(ctx, ctx.base(strong), consistency(ctx, weak, strong))


def selected(ctx: StageContext, weak: str, strong: str) -> Artifact:
    """D̈^b: the weak samples the reward model keeps (with the empty-capability guard)."""
    spec = ctx.config.reward
    return derive(ctx, "selected", 1, [scores(ctx, weak, strong)],
                  {"threshold": spec.threshold, "fallback": spec.empty_fallback},
                  lambda scored: select(scored, spec.threshold, spec.empty_fallback))


def selected_capabilities(ctx: StageContext, chosen: Artifact) -> list[str]:
    """The capabilities D̈^b holds (one with neither a kept nor a consistent sample is left out);
    NotApplicable when it holds none. A dry run, which builds nothing, plans all of them."""
    if not ctx.builder.builds:
        return list(ctx.config.capabilities)
    present = set(data.read(ctx, chosen)["capability"])
    caps = [c for c in ctx.config.capabilities if c in present]
    if not caps:
        raise NotApplicable("the reward model kept no sample and no capability has a consistent one")
    return caps


def evaluated_on(ctx: StageContext, model: ModelRef, caps: list[str]) -> ModelRef | list[Target]:
    """`model` on the test split of `caps` only: a capability left out of the selection has no
    result for a method trained on it, and its tables show the method as not applicable there."""
    if caps == list(ctx.config.capabilities):
        return model
    test = data.split_table(ctx, "test", with_gold_labels=True)
    return [Target(model, only_capabilities(ctx, test, caps))]
