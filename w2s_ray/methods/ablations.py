"""The paper's analyses of what the weak data does (Sec. 3.3-3.6), each a strong model trained
from the base on another training set; every capability is still evaluated."""

from __future__ import annotations

from w2s_ray.methods.pipeline import relabel, weak_labels
from w2s_ray.methods.registry import NotApplicable, method
from w2s_ray.stages import data
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.select import clean_plus_noise
from w2s_ray.stages.tables import derive, only_capabilities, union
from w2s_ray.stages.train import sft


def from_base(ctx: StageContext, strong: str, table, tag: str) -> ModelRef:
    return ctx.model(sft(ctx, ctx.base(strong), table, tag=tag))


@method("wts2")
def wts2(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Self-bootstrapping (Sec. 3.5): the strong base trained on the wts model's relabel D̂^b."""
    return from_base(ctx, strong, relabel(ctx, weak, strong), "wts2")


@method("mixed")
def mixed(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Sec. 3.6: the strong base trained on D̄^b ∪ D̂^b."""
    both = union(ctx, [weak_labels(ctx, weak), relabel(ctx, weak, strong)], tag="mixed")
    return from_base(ctx, strong, both, "mixed")


@method("clean")
def clean(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Only the correct weak samples (reads D^b's gold: an analysis, Fig. 7 left)."""
    return noise(ctx, weak, strong, p=0.0)


@method("noise", family="proportion")
def noise(ctx: StageContext, weak: str, strong: str, p: float) -> ModelRef:
    """The correct weak samples plus a proportion p of the incorrect ones (Fig. 7 left)."""
    gold = data.split_table(ctx, "unlabeled", with_gold_labels=True)
    table = derive(ctx, "clean_plus_noise", 1, [weak_labels(ctx, weak), gold], {"p": p, "seed": ctx.seed},
                   lambda w, g: clean_plus_noise(w, g, p, ctx.seed))
    return from_base(ctx, strong, table, "clean" if p == 0 else f"noise-{p:g}")


@method("weaken", family="capability")
def weaken(ctx: StageContext, weak: str, strong: str, capability: str) -> ModelRef:
    """Fig. 3: `capability`'s weak data comes from the weak model one rung below `weak`."""
    names = ctx.config.ladder.names()
    if names.index(weak) == 0:
        raise NotApplicable(f"weaken-{capability}: no rung below the weak rung {weak}")
    weaker = names[names.index(weak) - 1]
    others = [c for c in ctx.config.capabilities if c != capability]
    parts = [only_capabilities(ctx, weak_labels(ctx, weaker), [capability])]
    if others:
        parts.append(only_capabilities(ctx, weak_labels(ctx, weak), others))
    return from_base(ctx, strong, union(ctx, parts, tag="weaken"), f"weaken-{capability}")


@method("remove", family="capability")
def remove(ctx: StageContext, weak: str, strong: str, capability: str) -> ModelRef:
    """Fig. 4: `capability`'s weak data is dropped."""
    others = [c for c in ctx.config.capabilities if c != capability]
    return from_base(ctx, strong, only_capabilities(ctx, weak_labels(ctx, weak), others), f"remove-{capability}")
