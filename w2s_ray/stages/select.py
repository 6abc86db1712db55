"""Training sets carved from the weak labels D̄^b: the reward model's selection D̈^b (Eq. 8), its
equal-size random control, the weak model's most confident labels (`confident-filter`), and the
clean / noisy sets of the Sec. 3.6 analysis.

Every sampler draws per capability with a `random.Random` seeded by a string, so the draw is the
same in every process and does not depend on the other capabilities.
"""

from __future__ import annotations

import logging
import math
import random

import pandas as pd

from w2s_ray.capabilities import registry
from w2s_ray.stages.data import gold_of

log = logging.getLogger(__name__)

WEAK_COLUMNS = ["uid", "capability", "prompt", "label_text", "answer"]


class EmptySelection(ValueError):
    """The reward model kept nothing for a capability and `reward.empty_fallback` is `fail`."""


def select(scored: pd.DataFrame, threshold: float, fallback: str) -> pd.DataFrame:
    """Weak samples with R = 1, i.e. p(good) > threshold. A capability left empty trains on its
    consistent samples (`consistent`), on all its weak samples (`all`), or stops the run (`fail`);
    its rows are marked `fallback` so the results say so. A capability with no consistent sample
    either (ordinary for weak models on hard datasets) is left out: the selection methods do not
    apply to it, and their tables say so, while the sweep goes on."""
    weak = scored[scored["role"] == "weak"]
    parts = []
    for cap, g in weak.groupby("capability", sort=True):
        kept = g[g["score"] > threshold].assign(fallback=False)
        if kept.empty:
            if fallback == "fail":
                raise EmptySelection(f"reward model kept no {cap} sample at threshold {threshold}; "
                                     "set reward.empty_fallback to 'consistent' or 'all' to continue")
            kept = (g[g["target"] == 1] if fallback == "consistent" else g).assign(fallback=True)
            if kept.empty:
                log.warning("SELECTION EMPTY for %s: the reward model kept none of its samples and none "
                            "is consistent; the selection methods do not apply to it", cap)
                continue
            log.warning("SELECTION EMPTY for %s at threshold %s: training on its %d %s samples instead",
                        cap, threshold, len(kept), fallback)
        parts.append(kept)
    columns = [*WEAK_COLUMNS, "score", "fallback"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def same_size_random(weak: pd.DataFrame, selected: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A random subset of the weak labels with exactly the selected set's size per capability."""
    sizes = selected.groupby("capability").size()
    parts = []
    for cap, n in sizes.items():
        pool = weak[weak["capability"] == cap]
        rows = random.Random(f"random-subset:{seed}:{cap}").sample(range(len(pool)), int(n))
        parts.append(pool.iloc[sorted(rows)])
    return pd.concat(parts, ignore_index=True)[WEAK_COLUMNS]


def most_confident(scored: pd.DataFrame, share: float) -> pd.DataFrame:
    """Per capability, the weak labels whose weak-model confidence is in the top `share` (at least
    one row; ties keep table order), in table order: no gold is read."""
    parts = []
    for _, g in scored.groupby("capability", sort=True):
        n = max(1, math.ceil(share * len(g)))
        parts.append(g.loc[g["confidence"].sort_values(ascending=False, kind="stable").index[:n]].sort_index())
    return pd.concat(parts, ignore_index=True)[[*WEAK_COLUMNS, "confidence"]]


def correct_mask(df: pd.DataFrame, gold: pd.DataFrame) -> pd.Series:
    g = gold_of(df, gold)
    return pd.Series([registry.get(c).score(a, y) for c, a, y in zip(df["capability"], df["answer"], g)],
                     index=df.index)


def clean_plus_noise(weak: pd.DataFrame, gold: pd.DataFrame, p: float, seed: int) -> pd.DataFrame:
    """The correct weak samples plus round(p x #incorrect) incorrect ones, per capability (uses
    D^b's gold: an analysis of label noise, not a method a W2S user could run)."""
    ok = correct_mask(weak, gold)
    parts = []
    for cap in sorted(weak["capability"].unique()):
        mine = weak["capability"] == cap
        wrong = weak[mine & ~ok]
        n = round(p * len(wrong))
        picks = random.Random(f"noise:{seed}:{p}:{cap}").sample(range(len(wrong)), n)
        parts += [weak[mine & ok], wrong.iloc[sorted(picks)]]
    return pd.concat(parts, ignore_index=True)[WEAK_COLUMNS]
