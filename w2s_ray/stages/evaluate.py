"""Evaluation: exact match of the extracted answer with gold, per capability, on the test split."""

from __future__ import annotations

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.capabilities import registry
from w2s_ray.stages import data
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.generate import generate


def item_scores(preds: pd.DataFrame) -> pd.DataFrame:
    """One row per test item: uid, capability, correct, parsed; an unparseable output is simply wrong.
    Kept beside the metric rows, so intervals can resample the items (w2s_ray.statistics)."""
    correct = [registry.get(c).score(a, g) for c, a, g in
               zip(preds["capability"], preds["answer"], preds["gold"])]
    return pd.DataFrame({"uid": preds["uid"].to_numpy(), "capability": preds["capability"].to_numpy(),
                         "correct": correct, "parsed": preds["answer"].notna().to_numpy()})


def metric_rows(items: pd.DataFrame) -> pd.DataFrame:
    """Tidy (capability, metric, value) rows: accuracy, parsed share and n per capability."""
    per_cap = items.groupby("capability").agg(accuracy=("correct", "mean"), parsed=("parsed", "mean"),
                                              n=("correct", "size"))
    return per_cap.reset_index().melt(id_vars="capability", var_name="metric", value_name="value")


def score_frame(preds: pd.DataFrame) -> pd.DataFrame:
    return metric_rows(item_scores(preds))


def predictions(ctx: StageContext, targets: list[tuple[ModelRef, Artifact]]) -> list[Artifact]:
    """Each target model's generations on its test table."""
    return [generate(ctx, model, test, tag="evaluate") for model, test in targets]


def evaluate(ctx: StageContext, targets: list[tuple[ModelRef, Artifact]]) -> pd.DataFrame:
    """Per-item scores of (model, test table) targets, pooled: most methods have one target, the
    test split; wts-s has one per capability and icl changes the prompts."""
    preds = [data.read(ctx, art) for art in predictions(ctx, targets)]
    return item_scores(pd.concat(preds, ignore_index=True))
