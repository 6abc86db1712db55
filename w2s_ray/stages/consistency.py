"""The consistency partition of weak and strong labels (paper Eq. 6) and, for analysis only, the
five ground-truth categories of Fig. 5.

Labels are compared by their *extracted answers*: chain-of-thought texts that reach the same
answer by different words agree. An unparseable answer agrees with nothing, not even another
unparseable one: two failures to answer carry no shared belief.
"""

from __future__ import annotations

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.capabilities import registry
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.data import gold_of
from w2s_ray.stages.tables import derive


def agree(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a == b


def partition_frame(weak: pd.DataFrame, strong: pd.DataFrame) -> pd.DataFrame:
    """One row per D^b prompt: both labels and whether their answers agree (D^c) or not."""
    pair = weak[["uid", "capability", "prompt", "label_text", "answer"]].merge(
        strong[["uid", "label_text", "answer"]], on="uid", suffixes=("_weak", "_strong"), validate="1:1")
    if len(pair) != len(weak) or len(pair) != len(strong):
        raise ValueError(f"weak ({len(weak)}) and strong ({len(strong)}) labels cover different prompts")
    pair["consistent"] = [agree(a, b) for a, b in zip(pair["answer_weak"], pair["answer_strong"])]
    return pair


def partition(ctx: StageContext, weak_labels: Artifact, strong_labels: Artifact) -> Artifact:
    """D^c (consistent), and the two sides of the inconsistent rest: D̄^c (weak) and D̂^c (strong)."""
    return derive(ctx, "partition", 1, [weak_labels, strong_labels], {}, partition_frame)


def category(capability: str, weak: str | None, strong: str | None, gold: str) -> str:
    cap = registry.get(capability)
    weak_ok, strong_ok = cap.score(weak, gold), cap.score(strong, gold)
    if agree(weak, strong):
        return "true_con" if weak_ok else "false_con"
    if strong_ok:
        return "strong_true"
    return "weak_true" if weak_ok else "false_incon"


def categories(pair: pd.DataFrame, gold: pd.DataFrame) -> pd.Series:
    """Fig. 5 category of each partition row; needs D^b's gold, so analyses only."""
    g = gold_of(pair, gold)
    return pd.Series([category(c, w, s, y) for c, w, s, y in
                      zip(pair["capability"], pair["answer_weak"], pair["answer_strong"], g)],
                     index=pair.index, name="category")
