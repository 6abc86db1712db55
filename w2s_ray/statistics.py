"""95% intervals for accuracy and PGR, and which method differences exceed theirs.

One bootstrap combines both sources of error. Each replicate
1. reweights the test items with Poisson(1) weights drawn per item uid: seeds that share a test
   split (the default `data_seed`) share the weights, so the item sampling error is not averaged
   away over seeds that saw the same items, while seeds with their own split draw their own;
2. resamples the seeds with replacement (seed-to-seed variance of training);
3. recomputes each method's accuracy (mean over capabilities for 'average', over those it has
   where nothing was selected for one) and its PGR per seed, then averages over the resampled
   seeds, as the tables do.
The interval is the 2.5th-97.5th percentile of the replicates. With one seed step 2 is a no-op
and the interval is the test sampling error alone.

Methods are compared on the same replicates (paired: same items, same seeds), so a difference
whose interval excludes zero is one the test sampling and the seeds do not explain.

Without per-item scores (a rows table alone) each (seed, capability, method) accuracy is redrawn
from Binomial(n, accuracy) instead: the same marginal error, but unpaired, so differences between
methods get wider intervals than with the items.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd

RESAMPLES = 2000
AVERAGE = "average"


def pgr_of(acc: np.ndarray, weak: int, ceiling: int) -> np.ndarray:
    """PGR of every method column of `acc` (..., methods); NaN where the ceiling does not beat weak."""
    gap = acc[..., ceiling] - acc[..., weak]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (acc - acc[..., weak, None]) / gap[..., None]
    return np.where(gap[..., None] > 0, out, np.nan)


def item_replicates(items: pd.DataFrame, seeds: list, methods: list[str], rng: np.random.Generator,
                    resamples: int) -> np.ndarray:
    """(seeds, resamples, methods) accuracy replicates of one (pair, capability) from item scores."""
    uids = pd.Index(pd.unique(items["uid"]))
    weights = rng.poisson(1.0, size=(resamples, len(uids))).astype(float)
    out = np.full((len(seeds), resamples, len(methods)), np.nan)
    for i, seed in enumerate(seeds):
        x = items[items["seed"] == seed].pivot_table(index="uid", columns="method", values="correct",
                                                     aggfunc="mean").reindex(columns=methods)
        w = weights[:, uids.get_indexer(x.index)]
        seen = x.notna().to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[i] = (w @ np.nan_to_num(x.to_numpy(float))) / (w @ seen)
    return out


def binomial_replicates(acc: pd.DataFrame, seeds: list, methods: list[str], rng: np.random.Generator,
                        resamples: int) -> np.ndarray:
    """The same shape from (seed, method, accuracy, n) rows: each accuracy redrawn as Binomial(n, p)/n."""
    out = np.full((len(seeds), resamples, len(methods)), np.nan)
    for i, seed in enumerate(seeds):
        for j, method in enumerate(methods):
            hit = acc[(acc["seed"] == seed) & (acc["method"] == method)]
            if len(hit):
                p, n = float(hit["accuracy"].iloc[0]), int(hit["n"].iloc[0])
                out[i, :, j] = rng.binomial(n, p, size=resamples) / n
    return out


def observed(rows: pd.DataFrame) -> pd.DataFrame:
    """(weak, strong, seed, capability, method) -> accuracy and n, from the tidy metric rows."""
    wide = rows[rows["metric"].isin(["accuracy", "n"])].pivot_table(
        index=["weak", "strong", "seed", "capability", "method"], columns="metric", values="value")
    return wide.reset_index().rename_axis(columns=None)


def quiet_nan(fn, *args, **kwargs):
    """A nan-aware reduction where an all-NaN slice (PGR undefined in every seed) is simply NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def percentile(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = quiet_nan(np.nanpercentile, values, [2.5, 97.5], axis=0)
    return lo, hi


def pair_statistics(acc: pd.DataFrame, items: pd.DataFrame | None, methods: list[str],
                    rng: np.random.Generator, resamples: int) -> tuple[list[dict], list[dict]]:
    """Interval rows and difference rows of one pair, per capability and for the average."""
    seeds = sorted(acc["seed"].unique())
    capabilities = list(pd.unique(acc["capability"]))
    per_cap = {}
    for cap in capabilities:
        one = acc[acc["capability"] == cap]
        if items is not None:
            per_cap[cap] = item_replicates(items[items["capability"] == cap], seeds, methods, rng, resamples)
        else:
            per_cap[cap] = binomial_replicates(one, seeds, methods, rng, resamples)
    point = acc.pivot_table(index=["capability", "seed"], columns="method", values="accuracy"
                            ).reindex(columns=methods)
    weak, ceiling = methods.index("weak"), methods.index("ceiling")
    series = {cap: (reps, point.xs(cap, level="capability").reindex(seeds).to_numpy())
              for cap, reps in per_cap.items()}
    series = {cap: (reps, pgr_of(reps, weak, ceiling), obs, pgr_of(obs, weak, ceiling))
              for cap, (reps, obs) in series.items()}
    series[AVERAGE] = average_series(per_cap, point, capabilities, seeds, weak, ceiling)
    # a method averaged over fewer capabilities than another is not compared with it
    partial = set(np.flatnonzero(point.isna().any().to_numpy()))
    choice = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    intervals, differences = [], []
    for cap, (reps, pgr_reps, obs, pgr_obs) in series.items():
        for metric, seed_values, seed_obs in (("accuracy", reps, obs), ("pgr", pgr_reps, pgr_obs)):
            # Seed resampling: replicate b averages the seeds choice[b] drew, each on its items.
            stat = quiet_nan(np.nanmean, seed_values[choice, np.arange(resamples)[:, None]], axis=1)
            lo, hi = percentile(stat)
            value = quiet_nan(np.nanmean, seed_obs, axis=0)
            skip = {"weak", "ceiling"} if metric == "pgr" else set()
            for j, m in enumerate(methods):
                if m not in skip:
                    intervals.append({"capability": cap, "method": m, "metric": metric, "value": value[j],
                                      "lo": lo[j], "hi": hi[j], "seeds": len(seeds)})
            if cap != AVERAGE:
                continue
            kept = [j for j, m in enumerate(methods) if m not in skip]
            for a, b in itertools.combinations(kept, 2):
                if partial & {a, b}:
                    differences.append({"metric": metric, "method_a": methods[a], "method_b": methods[b],
                                        "difference": np.nan, "lo": np.nan, "hi": np.nan,
                                        "exceeds_interval": False})
                    continue
                dlo, dhi = percentile(stat[:, a] - stat[:, b])
                differences.append({"metric": metric, "method_a": methods[a], "method_b": methods[b],
                                    "difference": value[a] - value[b], "lo": dlo, "hi": dhi,
                                    "exceeds_interval": bool(dlo > 0 or dhi < 0)})
    return intervals, differences


def average_series(per_cap: dict[str, np.ndarray], point: pd.DataFrame, capabilities: list[str],
                   seeds: list, weak: int, ceiling: int) -> tuple[np.ndarray, ...]:
    """The average's accuracy and PGR, replicates (seeds, resamples, methods) and observed (seeds,
    methods), as the tables compute them: over the capabilities, except for a method that lacks
    one in a seed (nothing selected there), averaged over those it has, its PGR against weak and
    the ceiling over the same capabilities."""
    stack = np.stack([per_cap[c] for c in capabilities])  # (capabilities, seeds, resamples, methods)
    full = point.reindex(pd.MultiIndex.from_product([capabilities, seeds])).to_numpy()
    full = full.reshape(len(capabilities), len(seeds), -1)  # observed: (capabilities, seeds, methods)
    reps, obs = stack.mean(axis=0), point.groupby(level="seed").mean().reindex(seeds).to_numpy()
    pgr_reps, pgr_obs = pgr_of(reps, weak, ceiling), pgr_of(obs, weak, ceiling)
    has = ~np.isnan(full)
    for s, j in zip(*np.nonzero(~has.all(axis=0)), strict=True):
        on = has[:, s, j]
        if not on.any():
            continue  # the method has no capability in this seed: its average stays NaN
        own_reps, own_obs = stack[on, s].mean(axis=0), full[on, s].mean(axis=0)  # (resamples, methods), (methods)
        reps[s, :, j] = own_reps[:, j]
        pgr_reps[s, :, j] = pgr_of(own_reps, weak, ceiling)[:, j]
        pgr_obs[s, j] = pgr_of(own_obs, weak, ceiling)[j]
    return reps, pgr_reps, obs, pgr_obs


def bootstrap(rows: pd.DataFrame, items: pd.DataFrame | None = None, order: list[str] | None = None,
              resamples: int = RESAMPLES, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(intervals, differences) of every pair. intervals: weak, strong, capability, method, metric
    (accuracy | pgr), value (the tables' mean over seeds), lo, hi, seeds, source. differences:
    weak, strong, metric, method_a, method_b, difference, lo, hi, exceeds_interval (average only)."""
    acc = observed(rows)
    present = set(acc["method"])
    if missing := {"weak", "ceiling"} - present:
        raise ValueError(f"rows: method {sorted(missing)} missing; PGR needs the methods 'weak' and "
                         f"'ceiling' (the rows have {sorted(present)})")
    methods = [m for m in (order or pd.unique(acc["method"])) if m in present]
    rng = np.random.default_rng(seed)
    source = "items" if items is not None and not items.empty else "binomial"
    intervals, differences = [], []
    for (w, s), pair_acc in acc.groupby(["weak", "strong"], sort=False):
        pair_items = None if source == "binomial" else items[(items["weak"] == w) & (items["strong"] == s)]
        ints, diffs = pair_statistics(pair_acc, pair_items, methods, rng, resamples)
        intervals += [{"weak": w, "strong": s, **r, "source": source} for r in ints]
        differences += [{"weak": w, "strong": s, **r} for r in diffs]
    return pd.DataFrame(intervals), pd.DataFrame(differences)


def fmt(value: float, lo: float, hi: float) -> str:
    return "nan" if np.isnan(value) else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def interval_table(intervals: pd.DataFrame, differences: pd.DataFrame) -> pd.DataFrame:
    """Per pair and method (average over capabilities): accuracy and PGR with their 95% intervals,
    and the methods whose accuracy this one is above or below by more than the interval."""
    avg = intervals[intervals["capability"] == AVERAGE]
    acc_diffs = differences[(differences["metric"] == "accuracy") & differences["exceeds_interval"]]
    out = []
    for (w, s), g in avg.groupby(["weak", "strong"], sort=False):
        d = acc_diffs[(acc_diffs["weak"] == w) & (acc_diffs["strong"] == s)]
        for method in pd.unique(g["method"]):
            a = g[(g["method"] == method) & (g["metric"] == "accuracy")].iloc[0]
            p = g[(g["method"] == method) & (g["metric"] == "pgr")]
            above = [*d.loc[(d["method_a"] == method) & (d["difference"] > 0), "method_b"],
                     *d.loc[(d["method_b"] == method) & (d["difference"] < 0), "method_a"]]
            below = [*d.loc[(d["method_a"] == method) & (d["difference"] < 0), "method_b"],
                     *d.loc[(d["method_b"] == method) & (d["difference"] > 0), "method_a"]]
            out.append({"pair": f"{w} -> {s}", "method": method, "seeds": int(a["seeds"]),
                        "accuracy [95% interval]": fmt(a["value"], a["lo"], a["hi"]),
                        "pgr [95% interval]": fmt(*p.iloc[0][["value", "lo", "hi"]]) if len(p) else "",
                        "clearly above": ", ".join(above), "clearly below": ", ".join(below)})
    return pd.DataFrame(out)


def difference_table(differences: pd.DataFrame) -> pd.DataFrame:
    """Every pair of methods: the difference (a - b) of accuracy and of PGR with its 95% interval;
    '*' marks one larger than its interval (the interval excludes zero)."""
    out = differences.assign(
        pair=differences["weak"] + " -> " + differences["strong"],
        **{"a - b [95% interval]": [fmt(v, lo, hi) for v, lo, hi in
                                    zip(differences["difference"], differences["lo"], differences["hi"])]},
        exceeds=np.where(differences["exceeds_interval"], "*", ""))
    return out[["pair", "metric", "method_a", "method_b", "a - b [95% interval]", "exceeds"]]
