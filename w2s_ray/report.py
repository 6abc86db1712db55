"""PGR and accuracy tables from the tidy metric rows: CSV, Parquet, Markdown."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from w2s_ray.artifacts import Store


def pgr(weak: float, method: float, ceiling: float) -> float:
    """(acc_method - acc_weak) / (acc_ceiling - acc_weak); NaN where ceiling <= weak."""
    gap = ceiling - weak
    return (method - weak) / gap if gap > 0 else math.nan


def mean_se(values: pd.Series) -> str:
    """'mean ± s.e.' over seeds; seeds where the value is undefined (NaN PGR) are counted aside."""
    v = values.dropna()
    if v.empty:
        return "nan"
    text = f"{v.iloc[0]:.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}"
    return text if len(v) == len(values) else f"{text} ({len(v)}/{len(values)} seeds defined)"


def accuracy_wide(rows: pd.DataFrame, per_capability: bool) -> pd.DataFrame:
    """One row per (pair, seed, capability), one column per method; 'average' is over capabilities."""
    acc = rows[rows["metric"] == "accuracy"].rename(columns={"weak": "weak_rung", "strong": "strong_rung"})
    keys = ["weak_rung", "strong_rung", "seed", "method"]
    if not per_capability:
        acc = acc.groupby(keys, as_index=False, sort=False)["value"].mean().assign(capability="average")
    wide = acc.pivot_table(index=["weak_rung", "strong_rung", "seed", "capability"], columns="method",
                           values="value", sort=False)
    return wide.reset_index().rename_axis(columns=None)


def pgr_table(rows: pd.DataFrame, per_capability: bool = False) -> pd.DataFrame:
    """Per pair (and capability): mean ± s.e. over seeds of each method's accuracy and PGR.

    PGR is computed per seed and then averaged, so its spread shows seed-to-seed variation.
    """
    wide = accuracy_wide(rows, per_capability)
    methods = [m for m in pd.unique(rows["method"]) if m not in ("weak", "ceiling")]
    for m in methods:
        wide[f"pgr_{m}"] = [pgr(w, x, c) for w, x, c in zip(wide["weak"], wide[m], wide["ceiling"])]
    cols = ["weak", *methods, "ceiling", *[f"pgr_{m}" for m in methods]]
    out = []
    for (w, s, cap), g in wide.groupby(["weak_rung", "strong_rung", "capability"], sort=False):
        out.append({"pair": f"{w} -> {s}", "capability": cap, "seeds": len(g),
                    **{c: mean_se(g[c]) for c in cols}})
    return pd.DataFrame(out)


def write_results(store: Store, folder: str, rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """rows.parquet / rows.csv beside pgr.md (average) and pgr_by_capability.md."""
    tables = {"pgr": pgr_table(rows), "pgr_by_capability": pgr_table(rows, per_capability=True)}
    store.write_table(f"{folder}/rows.parquet", rows)
    store.write_bytes_atomic(f"{folder}/rows.csv", rows.to_csv(index=False).encode())
    for name, table in tables.items():
        store.write_bytes_atomic(f"{folder}/{name}.md", table.to_markdown(index=False).encode())
    return tables
