"""Dataset stages: per-capability splits, and the training tables derived from them.

Every table carries the contract's columns: uid, capability, prompt, label_text, answer, gold.
"""

from __future__ import annotations

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.capabilities import registry
from w2s_ray.capabilities.base import SPLITS
from w2s_ray.stages.context import StageContext

TABLE = "table.parquet"


def capability_splits(ctx: StageContext, capability: str) -> Artifact:
    """D^a / D^b / test of one capability, disjoint and deterministic by the data seed."""
    cap = registry.get(capability)
    sizes = ctx.config.sizes_for(capability)
    data_dir = ctx.config.data_dir
    evaluate_on = ctx.config.evaluate_on
    # named only when it is not test, so the keys of every test-split run stay what they were
    where = {} if evaluate_on == "test" else {"evaluate_on": evaluate_on}
    art = Artifact.make("splits", cap.version, [], {"capability": capability, "seed": ctx.data_seed,
                                                   "sizes": sizes.model_dump(), **where,
                                                   **cap.key_fields(data_dir)})

    def build(folder: str) -> dict:
        carved = cap.splits(ctx.data_seed, sizes.model_dump(), data_dir, evaluate_on)
        items = [ex for split in SPLITS for ex in carved[split]]
        names = [split for split in SPLITS for _ in carved[split]]
        df = pd.DataFrame({
            "uid": [f"{capability}-{ctx.data_seed}-{i}" for i in range(len(items))],
            "capability": capability,
            "split": names,
            "prompt": [e.prompt for e in items],
            "label_text": [e.label_text for e in items],
            "answer": [e.gold for e in items],
            "gold": [e.gold for e in items],
        })
        ctx.store.write_table(f"{folder}/{TABLE}", df)
        return {"rows": len(df)}

    return ctx.builder.ensure(art, build, capability=capability)


def read(ctx: StageContext, art: Artifact) -> pd.DataFrame:
    return ctx.store.read_table(f"{ctx.store.location(art)}/{TABLE}")


def split_frame(ctx: StageContext, split: str) -> pd.DataFrame:
    """One split over all configured capabilities, gold included (callers decide what to drop)."""
    frames = [read(ctx, capability_splits(ctx, c)) for c in ctx.config.capabilities]
    df = pd.concat(frames, ignore_index=True)
    return df[df["split"] == split].drop(columns="split").reset_index(drop=True)


def split_table(ctx: StageContext, split: str, with_gold_labels: bool) -> Artifact:
    """A split as a training/prompt table. Without gold labels, D^b's answers are hidden."""
    inputs = [capability_splits(ctx, c).id for c in ctx.config.capabilities]
    art = Artifact.make("split_table", 1, inputs, {"split": split, "gold_labels": with_gold_labels})

    def build(folder: str) -> dict:
        df = split_frame(ctx, split)
        if not with_gold_labels:
            df = df.assign(label_text=None, answer=None).drop(columns="gold")
        ctx.store.write_table(f"{folder}/{TABLE}", df)
        return {"rows": len(df)}

    return ctx.builder.ensure(art, build, split=split)


def gold_of(rows: pd.DataFrame, gold: pd.DataFrame) -> pd.Series:
    """D^b's gold answer of each row of `rows`, by uid, in `rows`' order (analyses only)."""
    return rows[["uid"]].merge(gold[["uid", "gold"]], on="uid", how="left", validate="1:1")["gold"]
