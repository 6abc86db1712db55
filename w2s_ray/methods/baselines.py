"""Weak, WTS (Burns et al.), the ceiling, and the reference points of Fig. 1 and Table 3."""

from __future__ import annotations

import random

import pandas as pd

from w2s_ray.capabilities import registry
from w2s_ray.methods.pipeline import weak_labels, weak_model, wts_model
from w2s_ray.methods.registry import Target, method
from w2s_ray.stages import data
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.tables import derive, only_capabilities
from w2s_ray.stages.train import sft

ICL_SHOTS = 3


@method("weak")
def weak(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """The weak rung trained on D^a's gold labels: the teacher, and PGR's floor."""
    return weak_model(ctx, weak)


@method("wts")
def wts(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Weak-to-strong (Burns et al.): the strong base trained on the weak labels of D^b."""
    return wts_model(ctx, weak, strong)


@method("ceiling")
def ceiling(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """The strong base trained on D^b's gold labels: PGR's ceiling."""
    gold = data.split_table(ctx, "unlabeled", with_gold_labels=True)
    return ctx.model(sft(ctx, ctx.base(strong), gold, tag="ceiling"))


@method("strong-base")
def strong_base(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """The strong base untrained: how much of the ceiling the prompt alone already elicits."""
    return ctx.base(strong)


@method("wts-s")
def wts_single(ctx: StageContext, weak: str, strong: str) -> list[Target]:
    """Single-capability W2S (Fig. 1): one strong model per capability, each on its own weak data."""
    test = data.split_table(ctx, "test", with_gold_labels=True)
    out = []
    for cap in ctx.config.capabilities:
        labels = only_capabilities(ctx, weak_labels(ctx, weak), [cap])
        model = ctx.model(sft(ctx, ctx.base(strong), labels, tag="wts-s"))
        out.append(Target(model, only_capabilities(ctx, test, [cap])))
    return out


def with_shots(test: pd.DataFrame, labeled: pd.DataFrame, seed: int, n_shots: int = ICL_SHOTS,
               exclude_own: bool = False) -> pd.DataFrame:
    """Each test prompt led by `n_shots` examples of `labeled` (ground-truth D^a examples for icl)
    of its capability, in the capability's shot format (a blank line between real-text examples);
    `exclude_own`: never the prompt's own row, when `labeled` holds the prompts themselves."""
    prompts = []
    for uid, cap, prompt in zip(test["uid"], test["capability"], test["prompt"]):
        pool = labeled[(labeled["capability"] == cap) & ~((labeled["uid"] == uid) & exclude_own)]
        shots = pool.iloc[random.Random(f"icl:{seed}:{uid}").sample(range(len(pool)), min(n_shots, len(pool)))]
        fmt = registry.get(cap)
        prompts.append(fmt.shot_separator.join(
            [*(fmt.shot(p, lab) for p, lab in zip(shots["prompt"], shots["label_text"])), prompt]))
    return test.assign(prompt=prompts)


@method("icl")
def icl(ctx: StageContext, weak: str, strong: str) -> list[Target]:
    """The untrained strong base with 3 ground-truth examples in the prompt (Table 3)."""
    test = data.split_table(ctx, "test", with_gold_labels=True)
    labeled = data.split_table(ctx, "labeled", with_gold_labels=True)
    shots = derive(ctx, "icl_prompts", 1, [test, labeled], {"shots": ICL_SHOTS, "seed": ctx.seed},
                   lambda t, lab: with_shots(t, lab, ctx.seed))
    return [Target(ctx.base(strong), shots)]
