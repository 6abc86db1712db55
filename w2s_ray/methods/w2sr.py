"""Weak-to-strong reasoning (Yang, Ma, Liu 2024) and a DPO-implicit-reward selector for ours.

- `w2sr-sft`, stage I (selective SFT): an item of D^b is kept when the weak model's zero-shot
  answer agrees with the strong base's in-context answer, its prompt led by `w2sr.shots` other
  items with their weak labels; the strong base is fine-tuned on the kept items with the weak
  model's outputs. Round r > 1 (`w2sr.rounds`) does the same with round r-1's model as the
  labeller, again from the strong base.
- `w2sr-dpo`, stage II: the stage-I model samples `w2sr.samples` answers per item of D^b,
  `stages/pairs.py` makes the contrastive pairs against the weak model's answers, and the stage-I
  model is trained by DPO against itself as the frozen reference.
- `ours-dpo-reward`: ours with the classifier reward model replaced by a DPO model's implicit
  reward beta * (log pi - log pi_ref) of each weak sample (RewardBench's DPO reward): the DPO model
  is stage II applied to the wts model (pairs sampled from it, it the reference), and a sample
  is kept when sigmoid(reward) > `reward.threshold` (0.5: the DPO model makes the weak answer
  more likely than the wts model does); the guard and stage 2 are ours'.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.methods.baselines import with_shots
from w2s_ray.methods.ours import second_stage
from w2s_ray.methods.pipeline import (
    consistency,
    unlabeled_prompts,
    weak_labels,
    wts_model,
)
from w2s_ray.methods.registry import NotApplicable, Target, method
from w2s_ray.stages import data
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.generate import generate
from w2s_ray.stages.logprobs import logprobs
from w2s_ray.stages.pairs import contrastive_pairs
from w2s_ray.stages.reward import scoring_rows
from w2s_ray.stages.sample import sample
from w2s_ray.stages.select import WEAK_COLUMNS, select
from w2s_ray.stages.tables import derive
from w2s_ray.stages.train import dpo, sft

#: the methods that train a DPO stage
DPO_METHODS = {"w2sr-dpo", "ours-dpo-reward"}


def required(ctx: StageContext, table: Artifact, what: str) -> Artifact:
    """`table`, or NotApplicable when a sweep built it empty (a dry run builds nothing)."""
    if ctx.builder.builds and data.read(ctx, table).empty:
        raise NotApplicable(f"{what} is empty")
    return table


def agreeing(labels: pd.DataFrame, icl: pd.DataFrame) -> pd.DataFrame:
    """The labelled rows whose answer the strong model's in-context answer repeats."""
    merged = labels.merge(icl[["uid", "answer"]].rename(columns={"answer": "icl_answer"}), on="uid")
    keep = merged["answer"].notna() & (merged["answer"] == merged["icl_answer"])
    return merged[keep][WEAK_COLUMNS]


def selective_sft_round(ctx: StageContext, strong: str, labels: Artifact) -> ModelRef:
    """The strong base fine-tuned on the items of `labels` its in-context answer agrees with."""
    spec = ctx.config.w2sr
    prompts = derive(ctx, "w2sr_icl_prompts", 1, [unlabeled_prompts(ctx), labels],
                     {"shots": spec.shots, "seed": ctx.seed},
                     lambda p, lab: with_shots(p, lab, ctx.seed, spec.shots, exclude_own=True))
    icl = generate(ctx, ctx.base(strong), prompts, tag="w2sr_icl")
    kept = required(ctx, derive(ctx, "w2sr_agreeing", 1, [labels, icl], {}, agreeing),
                    "stage I's selection (no weak answer agreed with the strong in-context answer)")
    return ctx.model(sft(ctx, ctx.base(strong), kept, tag="w2sr-sft"))


def stage_one(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    model = selective_sft_round(ctx, strong, weak_labels(ctx, weak))
    for _ in range(1, ctx.config.w2sr.rounds):
        relabelled = generate(ctx, model, unlabeled_prompts(ctx), tag="w2sr_relabel")
        model = selective_sft_round(ctx, strong, relabelled)
    return model


def contrastive(ctx: StageContext, model: ModelRef, weak: str) -> Artifact:
    """Pairs from `model`'s sampled answers on D^b against the weak model's (`stages/pairs.py`)."""
    spec = ctx.config.w2sr
    samples = sample(ctx, model, unlabeled_prompts(ctx), tag="w2sr_samples")
    pairs = derive(ctx, "contrastive_pairs", 1, [samples, weak_labels(ctx, weak)],
                   {"min_majority": spec.min_majority, "confident_majority": spec.confident_majority,
                    "seed": ctx.seed},
                   lambda s, w: contrastive_pairs(s, w, spec.min_majority, spec.confident_majority, ctx.seed))
    return required(ctx, pairs, "the contrastive pairs (no item passed the majority rules)")


@method("w2sr-sft")
def w2sr_sft(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Stage I of weak-to-strong reasoning: selective SFT, `w2sr.rounds` rounds."""
    return stage_one(ctx, weak, strong)


@method("w2sr-dpo")
def w2sr_dpo(ctx: StageContext, weak: str, strong: str) -> ModelRef:
    """Stage II: the stage-I model after DPO on its own contrastive samples."""
    first = stage_one(ctx, weak, strong)
    return ctx.model(dpo(ctx, first, contrastive(ctx, first, weak), tag="w2sr-dpo"))


def implicit_scores(policy: pd.DataFrame, reference: pd.DataFrame, beta: float) -> pd.DataFrame:
    """Each row's implicit reward beta * (log pi - log pi_ref), and sigmoid of it as `score`."""
    ref = reference[["uid", "logp_label_text"]].rename(columns={"logp_label_text": "ref_logp"})
    out = policy.merge(ref, on="uid", validate="1:1")
    out["reward"] = beta * (out["logp_label_text"] - out["ref_logp"])
    out["score"] = 1.0 / (1.0 + np.exp(-out["reward"]))
    return out


def dpo_selected(ctx: StageContext, weak: str, strong: str) -> Artifact:
    """D^b's weak samples the DPO model's implicit reward keeps, with ours' empty-capability guard."""
    wts = wts_model(ctx, weak, strong)
    judge = ctx.model(dpo(ctx, wts, contrastive(ctx, wts, weak), tag="dpo-reward"))
    rows = derive(ctx, "weak_scoring_rows", 1, [consistency(ctx, weak, strong)], {},
                  lambda pair: scoring_rows(pair).query("role == 'weak'"))
    policy = logprobs(ctx, judge, rows, ["label_text"], tag="dpo_reward_policy")
    reference = logprobs(ctx, wts, rows, ["label_text"], tag="dpo_reward_reference")
    beta, spec = ctx.config.w2sr.beta, ctx.config.reward
    scored = derive(ctx, "implicit_reward", 1, [policy, reference], {"beta": beta},
                    lambda p, r: implicit_scores(p, r, beta))
    return derive(ctx, "selected", 1, [scored], {"threshold": spec.threshold, "fallback": spec.empty_fallback},
                  lambda s: select(s, spec.threshold, spec.empty_fallback))


@method("ours-dpo-reward")
def ours_dpo_reward(ctx: StageContext, weak: str, strong: str) -> ModelRef | list[Target]:
    """Ours with the selection by a DPO model's implicit reward instead of the classifier's."""
    return second_stage(ctx, weak, strong, dpo_selected(ctx, weak, strong), "ours-dpo-reward")
