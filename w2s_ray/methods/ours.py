"""The paper's method (Sec. 4) and its two ablations of Table 2 and Fig. 10.

Stage 1 of "ours" is the wts model itself (warm-up on all of D̄^b), reused, never retrained.
"""

from __future__ import annotations

from w2s_ray.methods.pipeline import selected, weak_labels, wts_model
from w2s_ray.methods.registry import method
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.select import same_size_random
from w2s_ray.stages.tables import derive
from w2s_ray.stages.train import sft


@method("ours")
def ours(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Two-stage: the wts model continues on the reward model's selection D̈^b (Eq. 9-10)."""
    return ctx.model(sft(ctx, wts_model(ctx, weak, strong), selected(ctx, weak, strong), tag="ours"))


@method("ours-random")
def ours_random(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Stage 2 on a random subset of D̄^b of exactly D̈^b's size per capability (Table 2)."""
    subset = derive(ctx, "random_subset", 1, [weak_labels(ctx, weak), selected(ctx, weak, strong)],
                    {"seed": ctx.seed}, lambda w, s: same_size_random(w, s, ctx.seed))
    return ctx.model(sft(ctx, wts_model(ctx, weak, strong), subset, tag="ours-random"))


@method("ours-one-stage")
def ours_one_stage(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """No warm-up: the strong base trained on D̈^b only (Fig. 10)."""
    return ctx.model(sft(ctx, ctx.base(strong), selected(ctx, weak, strong), tag="ours-one-stage"))
