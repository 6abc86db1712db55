"""The paper's method (Sec. 4) and its two ablations of Table 2 and Fig. 10.

Stage 1 of "ours" is the wts model itself (warm-up on all of D̄^b), reused, never retrained.
A capability the selection left out (nothing kept, nothing consistent) is evaluated for none of
them: the methods do not apply to it.
"""

from __future__ import annotations

from w2s_ray.artifacts import Artifact
from w2s_ray.methods.pipeline import (
    evaluated_on,
    selected,
    selected_capabilities,
    weak_labels,
    wts_model,
)
from w2s_ray.methods.registry import Target, method
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.select import same_size_random
from w2s_ray.stages.tables import derive
from w2s_ray.stages.train import sft


def stage2_anchor(ctx: StageContext, strong: str) -> ModelRef | None:
    """Where stage 2's weight averaging returns to: the strong rung's pretrained weights when
    `stage2.anchor: pretrained` (a second stage on weak labels otherwise moves the student twice
    away from what it knew untrained), else the wts model, the stage's own base."""
    return ctx.base(strong) if ctx.config.stage2.anchor == "pretrained" else None


def second_stage(ctx: StageContext, weak: str, strong: str, chosen: Artifact, tag: str,
                 data: Artifact | None = None) -> list[Target]:
    """Stage 2 of a two-stage recipe: the wts model continues on `data` (the selection `chosen`
    itself unless given), evaluated on the capabilities where `chosen` kept something."""
    caps = selected_capabilities(ctx, chosen)
    stage2 = sft(ctx, wts_model(ctx, weak, strong), chosen if data is None else data, "stage2", tag=tag,
                 anchor=stage2_anchor(ctx, strong))
    return evaluated_on(ctx, ctx.model(stage2), caps)


@method("ours")
def ours(ctx: StageContext, weak: str, strong: str) -> ModelRef | list[Target]:
    """Two-stage: the wts model continues on the reward model's selection D̈^b (Eq. 9-10)."""
    return second_stage(ctx, weak, strong, selected(ctx, weak, strong), "ours")


@method("ours-random")
def ours_random(ctx: StageContext, weak: str, strong: str) -> ModelRef | list[Target]:
    """Stage 2 on a random subset of D̄^b of exactly D̈^b's size per capability (Table 2)."""
    chosen = selected(ctx, weak, strong)
    subset = derive(ctx, "random_subset", 1, [weak_labels(ctx, weak), chosen],
                    {"seed": ctx.seed}, lambda w, s: same_size_random(w, s, ctx.seed))
    return second_stage(ctx, weak, strong, chosen, "ours-random", data=subset)


@method("ours-one-stage")
def ours_one_stage(ctx: StageContext, weak: str, strong: str) -> ModelRef | list[Target]:
    """No warm-up: the strong base trained on D̈^b only (Fig. 10)."""
    chosen = selected(ctx, weak, strong)
    caps = selected_capabilities(ctx, chosen)
    return evaluated_on(ctx, ctx.model(sft(ctx, ctx.base(strong), chosen, tag="ours-one-stage")), caps)
