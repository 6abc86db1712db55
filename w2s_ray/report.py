"""PGR and accuracy tables from the tidy metric rows (CSV, Parquet, Markdown), and the report
built on them: intervals, figures and report.html. Regenerate it all from a results folder:

    python -m w2s_ray.report <results dir>
"""

from __future__ import annotations

import argparse
import logging
import math
import sys

import numpy as np
import pandas as pd

from w2s_ray import figures, report_page, statistics
from w2s_ray.artifacts import Store

log = logging.getLogger(__name__)


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


NOT_APPLICABLE = "n/a"


def accuracy_wide(rows: pd.DataFrame, per_capability: bool) -> pd.DataFrame:
    """One row per (pair, seed, capability), one column per method. 'average' is over the
    capabilities each method has a result on; where that is fewer than the pair's (nothing was
    selected for one), `caps:<method>` counts them and `weak:<method>`, `ceiling:<method>` are
    weak's and the ceiling's averages over the same capabilities, which that method's PGR needs."""
    acc = rows[rows["metric"] == "accuracy"].rename(columns={"weak": "weak_rung", "strong": "strong_rung"})
    keys = ["weak_rung", "strong_rung", "seed", "method"]
    index = ["weak_rung", "strong_rung", "seed", "capability"]
    partial = pd.DataFrame()
    if not per_capability:
        caps = acc.groupby(keys[:3], sort=False)["capability"].transform("nunique")
        grouped = acc.assign(_all=caps).groupby(keys, as_index=False, sort=False)
        counts = grouped["capability"].nunique().rename(columns={"capability": "caps"})
        counts = counts[counts["caps"] < grouped["_all"].first()["_all"]]
        partial = references_over_own_capabilities(acc, counts, keys)
        acc = grouped["value"].mean().assign(capability="average")
    wide = acc.pivot_table(index=index, columns="method", values="value", sort=False)
    # pivot_table drops a method that is missing everywhere; it stays, as a column of NaN
    wide = wide.reindex(columns=[*wide.columns, *(m for m in pd.unique(acc["method"]) if m not in wide.columns)])
    wide = wide.reset_index().rename_axis(columns=None)
    if not partial.empty:
        wide = wide.merge(partial.assign(capability="average"), on=index, how="left")
    return wide


def references_over_own_capabilities(acc: pd.DataFrame, counts: pd.DataFrame, keys: list[str]
                                     ) -> pd.DataFrame:
    """Per (pair, seed) and method of `counts` (those with fewer capabilities than the pair):
    that count, and weak's and the ceiling's mean accuracy over the method's own capabilities."""
    if counts.empty:
        return pd.DataFrame()
    own = acc.merge(counts[keys], on=keys)[[*keys[:3], "method", "capability"]]
    refs = acc[acc["method"].isin(["weak", "ceiling"])].rename(columns={"method": "reference"})
    means = (own.merge(refs[[*keys[:3], "capability", "reference", "value"]], on=[*keys[:3], "capability"])
             .groupby([*keys, "reference"], sort=False)["value"].mean().unstack("reference")
             .reindex(columns=["weak", "ceiling"]).reset_index())
    wide = means.merge(counts, on=keys).pivot_table(index=keys[:3], columns="method",
                                                    values=["caps", "weak", "ceiling"], sort=False)
    wide.columns = [f"{name}:{method}" for name, method in wide.columns]
    return wide.reset_index()


def capability_note(counts: pd.Series, defined: pd.Series, of: int) -> str:
    """' (k of n capabilities)' where a method's average covers fewer than the pair's in some
    seed (`counts` is NaN where it covers all); a range where seeds differ."""
    k = counts.fillna(of)[defined]
    if k.empty or k.min() == of:
        return ""
    lo, hi = int(k.min()), int(k.max())
    return f" ({lo if lo == hi else f'{lo}-{hi}'} of {of} capabilities)"


def pgr_table(rows: pd.DataFrame, per_capability: bool = False, order: list[str] | None = None
              ) -> pd.DataFrame:
    """Per pair (and capability): mean ± s.e. over seeds of each method's accuracy and PGR.

    PGR is computed per seed and then averaged, so its spread shows seed-to-seed variation.
    Method columns follow `order` (the config's), else the rows'; a method of `order` without
    any row (it applied to no pair) is a column of n/a. In the average, a method without a result
    on some capability (nothing selected there) is averaged over those it has, its PGR against
    weak and the ceiling over the same capabilities, and the cells say over how many.
    """
    wide = accuracy_wide(rows, per_capability)
    methods = [m for m in (order or pd.unique(rows["method"])) if m not in ("weak", "ceiling")]
    for m in methods:
        if m not in wide.columns:
            wide[m] = math.nan
        weak, ceiling = wide["weak"], wide["ceiling"]
        if f"caps:{m}" in wide.columns:
            own = wide[f"caps:{m}"].notna()
            weak, ceiling = weak.where(~own, wide[f"weak:{m}"]), ceiling.where(~own, wide[f"ceiling:{m}"])
        wide[f"pgr_{m}"] = [pgr(w, x, c) for w, x, c in zip(weak, wide[m], ceiling)]
    cols = ["weak", *methods, "ceiling", *[f"pgr_{m}" for m in methods]]
    all_caps = rows[rows["metric"] == "accuracy"].groupby(["weak", "strong"])["capability"].nunique()
    out = []
    for (w, s, cap), g in wide.groupby(["weak_rung", "strong_rung", "capability"], sort=False):
        row = {"pair": f"{w} -> {s}", "capability": cap, "seeds": len(g), **{c: mean_se(g[c]) for c in cols}}
        for m in methods:
            if f"caps:{m}" in g.columns:
                note = capability_note(g[f"caps:{m}"], g[m].notna(), all_caps[(w, s)])
                row[m], row[f"pgr_{m}"] = row[m] + note, row[f"pgr_{m}"] + note
        # a method with no accuracy here did not apply (e.g. nothing selected for the capability)
        row |= {c: NOT_APPLICABLE for m in methods if g[m].isna().all() for c in (m, f"pgr_{m}")}
        out.append(row)
    return pd.DataFrame(out)


SELECTION_COLUMNS = {  # (analysis, metric) -> column of the selection table
    ("reward", "train_accuracy"): "reward_train_acc",
    ("reward", "out_of_fold_accuracy"): "reward_oof_acc",
    ("selection", "retention"): "retention",
    ("selection", "weak_accuracy"): "weak_acc",
    ("selection", "selected_accuracy"): "selected_acc",
    ("selection", "strong_accuracy"): "relabel_acc",
}


def selection_table(notes: pd.DataFrame) -> pd.DataFrame:
    """Per pair, averaged over capabilities: the consistent share of D^b, the reward model's
    accuracy on its training data (out of fold, with cross-fitting), retention, and the selected
    set's true accuracy beside the weak labels' and the strong relabel's (Fig. 11); capabilities
    where selection fell back. A column whose metric no run measured is left out."""
    if notes.empty or "selection" not in set(notes["analysis"]):
        return pd.DataFrame()
    out = []
    for (w, s), g in notes.groupby(["weak", "strong"], sort=False):
        avg = g[g["capability"] == "average"]
        part = avg[avg["analysis"] == "partition"].pivot_table(index="seed", columns="metric", values="value")
        row = {"pair": f"{w} -> {s}", "seeds": g["seed"].nunique(),
               "consistent": mean_se(part["n_consistent"] / part["n_unlabeled"])}
        for (analysis, metric), column in SELECTION_COLUMNS.items():
            if ((notes["analysis"] == analysis) & (notes["metric"] == metric)).any():
                row[column] = mean_se(avg[(avg["analysis"] == analysis) & (avg["metric"] == metric)]["value"])
        fell = g.query("analysis == 'selection' and metric == 'fallback' and value > 0 "
                       "and capability != 'average'")
        row["fallback"] = ", ".join(sorted(set(fell["capability"]))) or "none"
        empty = g.query("analysis == 'selection' and metric == 'n_selected' and value == 0 "
                        "and capability != 'average'")
        if not empty.empty:
            row["fallback"] += f"; {NOT_APPLICABLE} (none selected): " + ", ".join(sorted(set(empty["capability"])))
        out.append(row)
    return pd.DataFrame(out)


def result_tables(rows: pd.DataFrame, notes: pd.DataFrame, order: list[str] | None = None
                  ) -> dict[str, pd.DataFrame]:
    """pgr (average), pgr_by_capability and, when the methods select data, selection."""
    tables = {"pgr": pgr_table(rows, order=order),
              "pgr_by_capability": pgr_table(rows, per_capability=True, order=order)}
    if not (selection := selection_table(notes)).empty:
        tables["selection"] = selection
    return tables


def write_results(store: Store, folder: str, rows: pd.DataFrame, notes: pd.DataFrame,
                  order: list[str] | None = None, items: pd.DataFrame | None = None,
                  run: dict | None = None) -> dict[str, pd.DataFrame]:
    """rows and analysis rows (Parquet, CSV), the per-item scores (items.parquet) and the run's
    record (run.json) beside pgr.md, pgr_by_capability.md, selection.md; then the report."""
    tables = result_tables(rows, notes, order)
    for name, frame in {"rows": rows, "analysis": notes}.items():
        store.write_table(f"{folder}/{name}.parquet", frame)
        store.write_bytes_atomic(f"{folder}/{name}.csv", frame.to_csv(index=False).encode())
    if items is not None:
        store.write_table(f"{folder}/items.parquet", items)
    if run is not None:
        store.write_json(f"{folder}/run.json", run)
        if run.get("throughput") is not None:
            speed = pd.DataFrame(run["throughput"]).to_csv(index=False)
            store.write_bytes_atomic(f"{folder}/throughput.csv", speed.encode())
    write_markdown(store, folder, tables)
    return tables | write_report(store, folder, rows, notes, tables, items, run, order)


def write_markdown(store: Store, folder: str, tables: dict[str, pd.DataFrame]) -> None:
    for name, table in tables.items():
        store.write_bytes_atomic(f"{folder}/{name}.md", table.to_markdown(index=False).encode())


def pair_order(rows: pd.DataFrame, run: dict | None) -> list[tuple[str, str]]:
    """Pairs by the ladder's rung order (strong, then weak) when the run's config is known."""
    pairs = list(rows[["weak", "strong"]].drop_duplicates().itertuples(index=False, name=None))
    if not run:
        return pairs
    rungs = [r["name"] for r in run["config"]["ladder"]["rungs"]]
    return sorted(pairs, key=lambda p: (rungs.index(p[1]), rungs.index(p[0])))


def write_report(store: Store, folder: str, rows: pd.DataFrame, notes: pd.DataFrame,
                 tables: dict[str, pd.DataFrame], items: pd.DataFrame | None, run: dict | None,
                 order: list[str] | None) -> dict[str, pd.DataFrame]:
    """intervals.md and differences.md (statistics), the figures (PNG, SVG) and report.html."""
    order = run["config"]["methods"] if run else order
    intervals, differences = statistics.bootstrap(rows, items, order)
    new = {"intervals": statistics.interval_table(intervals, differences),
           "differences": statistics.difference_table(differences)}
    write_markdown(store, folder, new)
    store.write_bytes_atomic(f"{folder}/intervals.csv", intervals.to_csv(index=False).encode())
    store.write_bytes_atomic(f"{folder}/differences.csv", differences.to_csv(index=False).encode())
    methods = list(pd.unique(intervals["method"]))
    params = (run or {}).get("rung_parameters") or {}
    svgs = {}
    for name, fig in figures.draw(intervals, notes, pair_order(rows, run), methods, params).items():
        rendered = figures.render(fig)
        for fmt, data in rendered.items():
            store.write_bytes_atomic(f"{folder}/{name}.{fmt}", data)
        svgs[name] = rendered["svg"]
    # A figure an earlier run of this sweep drew but these rows do not support would read as current.
    for name in set(figures.NAMES) - set(svgs):
        for fmt in ("png", "svg"):
            if store.exists(f"{folder}/{name}.{fmt}"):
                store.fs.delete_file(f"{folder}/{name}.{fmt}")
    page = report_page.page(svgs, tables | new, rows, run)
    store.write_bytes_atomic(f"{folder}/report.html", page.encode())
    return new


def read_results(store: Store, folder: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None,
                                                     dict | None]:
    """rows (Parquet, else CSV: required), analysis, items and run.json where they exist."""
    def table(name: str) -> pd.DataFrame | None:
        if store.exists(f"{folder}/{name}.parquet"):
            return store.read_table(f"{folder}/{name}.parquet")
        if store.exists(f"{folder}/{name}.csv"):
            with store.fs.open_input_stream(f"{folder}/{name}.csv") as f:
                return pd.read_csv(f)
        return None

    rows = table("rows")
    if rows is None:
        raise FileNotFoundError(f"results dir: no rows.parquet or rows.csv in {folder} (the folder a "
                                "sweep prints as 'results:')")
    notes = table("analysis")
    run = store.read_json(f"{folder}/run.json") if store.exists(f"{folder}/run.json") else None
    return rows, notes if notes is not None else pd.DataFrame(columns=["analysis"]), table("items"), run


def regenerate(results: str) -> dict[str, pd.DataFrame]:
    """Every table, figure and report.html of a results folder, from its saved rows."""
    store = Store(results)
    folder = store.path()
    rows, notes, items, run = read_results(store, folder)
    order = run["config"]["methods"] if run else None
    tables = result_tables(rows, notes, order)
    write_markdown(store, folder, tables)
    return tables | write_report(store, folder, rows, notes, tables, items, run, order)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m w2s_ray.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="a sweep's results folder (local path or s3:// gs:// file:// URI)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        regenerate(args.results)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("report: %s", Store(args.results).uri("report.html"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
