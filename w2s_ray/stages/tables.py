"""Tables derived from other tables (subsets, unions, partitions) as cached artifacts.

A derived table is cheap to compute, but making it an artifact gives it a key: every model
trained on it is keyed by what it was trained on, and two recipes that derive the same table
share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.data import TABLE, read


def derive(ctx: StageContext, stage: str, version: int, inputs: list[Artifact], params: dict[str, Any],
           fn: Callable[..., pd.DataFrame], tag: str | None = None) -> Artifact:
    """`fn(*input frames)` stored as a table; bump `version` whenever `fn`'s logic changes."""
    art = Artifact.make(stage, version, [a.id for a in inputs], params)

    def build(folder: str) -> dict:
        df = fn(*[read(ctx, a) for a in inputs])
        ctx.store.write_table(f"{folder}/{TABLE}", df.reset_index(drop=True))
        return {"rows": len(df)}

    return ctx.builder.ensure(art, build, tag=tag or stage)


def only_capabilities(ctx: StageContext, table: Artifact, keep: list[str]) -> Artifact:
    return derive(ctx, "subset", 1, [table], {"capabilities": sorted(keep)},
                  lambda df: df[df["capability"].isin(keep)])


def union(ctx: StageContext, tables: list[Artifact], tag: str = "union") -> Artifact:
    return derive(ctx, "union", 1, tables, {}, lambda *dfs: pd.concat(dfs, ignore_index=True), tag)
