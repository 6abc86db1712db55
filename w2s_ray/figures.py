"""The papers' figures from the tidy result rows (matplotlib, Agg: no display needed).

- accuracy_vs_size: accuracy per method vs the strong rung, one panel per capability and the
  average (Burns et al. Fig. 3; Zhou et al. Fig. 8);
- pgr: PGR per pair and method (Zhou et al. Figs. 9, 14);
- consistency: Fig. 5/6's categories of the weak vs strong labels per pair, and Fig. 12's make-up
  of the selected set;
- selection: the selected labels' accuracy and retention vs the weak labels' accuracy (Fig. 11).

Each plotted series carries an SVG id `series-<panel>-<label>-<i>`, so a reader of the SVG (and
the tests) can count the series without parsing the drawing.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from w2s_ray.stages.categories import CATEGORIES

REFERENCE_STYLE = {"weak": {"color": "0.55", "linestyle": "--"}, "ceiling": {"color": "black", "linestyle": "--"}}
CATEGORY_COLORS = {"true_con": "#4c9a2a", "false_con": "#c0392b", "strong_true": "#2e86c1",
                   "weak_true": "#f1c40f", "false_incon": "#7f8c8d"}
PANELS = {"wts_vs_weak": "weak vs wts labels (Fig. 5)", "wts2_vs_wts": "wts vs wts-2 labels (Fig. 6)",
          "selected_categories": "selected set $\\ddot{D}^b$ (Fig. 12)"}


#: tab10 without its grey, which the weak and ceiling references use.
PALETTE = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]


def color(i: int):
    return PALETTE[i % len(PALETTE)]


def tag(artists, panel: int, label: str) -> None:
    for i, artist in enumerate(artists):
        artist.set_gid(f"series-{panel}-{label}-{i}")


def error_note(intervals: pd.DataFrame) -> str:
    seeds = int(intervals["seeds"].max())
    source = ("test items resampled within each seed" if intervals["source"].iloc[0] == "items"
              else "test sampling error as Binomial(n, acc) (no per-item scores saved)")
    over = f" and {seeds} seeds resampled" if seeds > 1 else " (1 seed: no seed-to-seed term)"
    return f"error bars: 95% bootstrap interval, {source}{over}"


def size_label(rung: str, params: dict[str, int | None]) -> str:
    n = params.get(rung)
    if not n:
        return rung
    return f"{rung}\n{n / 1e9:.1f}B" if n >= 1e9 else f"{rung}\n{n / 1e6:.2f}M"


def pair_labels(pairs: list[tuple[str, str]], params: dict[str, int | None]) -> list[str]:
    """The strong rung (and its size) per pair; the weak rung too where strong rungs repeat."""
    strong = [s for _, s in pairs]
    repeated = len(set(strong)) < len(strong)
    return [(f"{w}\u2192" if repeated else "") + size_label(s, params) for w, s in pairs]


def yerr(sub: pd.DataFrame) -> np.ndarray:
    return np.clip(np.vstack([sub["value"] - sub["lo"], sub["hi"] - sub["value"]]), 0, None)


def accuracy_vs_size(intervals: pd.DataFrame, pairs: list[tuple[str, str]], methods: list[str],
                     params: dict[str, int | None]) -> Figure:
    acc = intervals[intervals["metric"] == "accuracy"]
    caps = [c for c in pd.unique(acc["capability"]) if c != "average"] + ["average"]
    cols = min(3, len(caps))
    rows = -(-len(caps) // cols)
    legend_rows = -(-len(methods) // 6)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6 + 0.25 * legend_rows),
                             squeeze=False)
    x = np.arange(len(pairs))
    others = [m for m in methods if m not in REFERENCE_STYLE]
    for panel, (ax, cap) in enumerate(zip(axes.flat, caps)):
        for method in methods:
            sub = acc[(acc["capability"] == cap) & (acc["method"] == method)].set_index(["weak", "strong"])
            sub = sub.reindex(pairs)
            style = REFERENCE_STYLE.get(method) or {"color": color(others.index(method))}
            bars = ax.errorbar(x, sub["value"], yerr=yerr(sub), marker="o", markersize=4, capsize=2,
                               linewidth=1.4, label=method, **style)
            tag([bars.lines[0]], panel, method)
        ax.set_title(cap if cap != "average" else "average over capabilities")
        ax.set_xticks(x, pair_labels(pairs, params))
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(caps):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(methods), 6), frameon=False)
    axis = ("strong rung (weak rung one below it)" if len({s for _, s in pairs}) == len(pairs)
            else "pair (weak \u2192 strong)")
    fig.supxlabel(f"{axis}\n{error_note(acc)}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.1 + 0.25 * legend_rows) / fig.get_figheight()))
    return fig


def pgr(intervals: pd.DataFrame, pairs: list[tuple[str, str]], methods: list[str],
        params: dict[str, int | None]) -> Figure:
    data = intervals[(intervals["metric"] == "pgr") & (intervals["capability"] == "average")]
    shown = [m for m in methods if m in set(data["method"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(pairs) * max(len(shown), 1) ** 0.5 + 3), 4.2))
    width = 0.8 / max(len(shown), 1)
    x = np.arange(len(pairs))
    for i, method in enumerate(shown):
        sub = data[data["method"] == method].set_index(["weak", "strong"]).reindex(pairs)
        bars = ax.bar(x + (i - (len(shown) - 1) / 2) * width, sub["value"], width, yerr=yerr(sub),
                      capsize=2, label=method, color=color(i))
        tag(bars.patches, 0, method)
    ax.axhline(0, color="0.55", linewidth=1, linestyle="--")
    ax.axhline(1, color="black", linewidth=1, linestyle="--")
    ax.set_xticks(x, [label.replace("\n", " ") for label in pair_labels(pairs, params)])
    ax.set_xlabel("strong rung")
    ax.set_ylabel("PGR (average over capabilities)")
    ax.set_title("performance gap recovered: 0 = weak, 1 = ceiling")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(alpha=0.3, axis="y")
    fig.text(0.01, 0.005, error_note(data), fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def category_means(notes: pd.DataFrame, analysis: str, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Fig. 5 category fractions (average over capabilities, mean over seeds), pairs x categories."""
    sub = notes[(notes["analysis"] == analysis) & (notes["capability"] == "average")
                & notes["metric"].isin(list(CATEGORIES))]
    means = sub.groupby(["weak", "strong", "metric"])["value"].mean().unstack("metric")
    return means.reindex(index=pd.MultiIndex.from_tuples(pairs), columns=list(CATEGORIES))


def consistency(notes: pd.DataFrame, pairs: list[tuple[str, str]], params: dict[str, int | None]
                ) -> Figure:
    panels = [a for a in PANELS if a in set(notes["analysis"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.2), squeeze=False)
    x = np.arange(len(pairs))
    for panel, (ax, analysis) in enumerate(zip(axes.flat, panels)):
        means = category_means(notes, analysis, pairs).fillna(0.0)
        bottom = np.zeros(len(pairs))
        for cat, name in CATEGORIES.items():
            if analysis == "wts2_vs_wts":
                name = name.replace("WTS True", "WTS-2 True").replace("Weak True", "WTS True")
            bars = ax.bar(x, means[cat], 0.6, bottom=bottom, label=name, color=CATEGORY_COLORS[cat])
            tag(bars.patches, panel, cat)
            bottom += means[cat].to_numpy()
        ax.set_title(PANELS[analysis], fontsize=10)
        ax.set_xticks(x, [label.replace("\n", " ") for label in pair_labels(pairs, params)])
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of $D^b$" if analysis != "selected_categories" else "share of the selected set")
        ax.legend(fontsize=7, loc="lower right", framealpha=0.85)
    fig.text(0.01, 0.005, "average over capabilities, mean over seeds; gold labels read for analysis only",
             fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def selection_points(notes: pd.DataFrame) -> pd.DataFrame:
    """(weak, strong, capability) -> the selection metrics, mean over seeds; capabilities only."""
    sub = notes[(notes["analysis"] == "selection") & (notes["capability"] != "average")]
    wide = sub.groupby(["weak", "strong", "capability", "metric"])["value"].mean().unstack("metric")
    return wide.reset_index()


def selection(notes: pd.DataFrame, pairs: list[tuple[str, str]]) -> Figure:
    """Colour = pair, marker = which labels; each point is one capability, named beside it."""
    points = selection_points(notes)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.4))
    left.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle=":")
    cmap = plt.get_cmap("tab10")
    panels = ((left, 0, "selected_accuracy", "o"), (left, 0, "strong_accuracy", "^"),
              (right, 1, "retention", "o"))
    for k, (w, s) in enumerate(pairs):
        mine = points[(points["weak"] == w) & (points["strong"] == s)]
        for ax, panel, key, marker in panels:
            dots = ax.scatter(mine["weak_accuracy"], mine[key], marker=marker, color=cmap(k % 10), s=36)
            dots.set_gid(f"series-{panel}-{key}-{k}")
            for _, p in mine.iterrows():
                ax.annotate(p["capability"][:5], (p["weak_accuracy"], p[key]), fontsize=6, color="0.35",
                            xytext=(3, 2), textcoords="offset points")
    keys = [plt.Line2D([], [], color="0.3", marker=m, linestyle="", label=t) for m, t in
            (("o", "selected labels (reward model)"), ("^", "wts relabel"))]
    keys.append(plt.Line2D([], [], color="0.6", linestyle=":", label="y = x: the weak labels"))
    keys += [plt.Line2D([], [], color=cmap(k % 10), marker="s", linestyle="", label=f"{w}\u2192{s}")
             for k, (w, s) in enumerate(pairs)]
    left.legend(handles=keys, fontsize=7, loc="lower right")
    left.set(xlabel="weak labels' accuracy on $D^b$", ylabel="labels' accuracy",
             title="selected labels vs the weak and wts labels (Fig. 11)", xlim=(0, 1), ylim=(0, 1))
    right.set(xlabel="weak labels' accuracy on $D^b$", ylabel="retention (selected / $D^b$)",
              title="how much the selection keeps", xlim=(0, 1), ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.text(0.01, 0.005, "one point per pair and capability, mean over seeds; gold labels read for "
             "analysis only", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


NAMES = ("accuracy_vs_size", "pgr", "consistency", "selection")


def draw(intervals: pd.DataFrame, notes: pd.DataFrame, pairs: list[tuple[str, str]],
         methods: list[str], params: dict[str, int | None]) -> dict[str, Figure]:
    """Every figure the rows support: PGR only where a method is measured against weak and
    ceiling (`--methods weak ceiling` has none), the analyses' figures only where the methods
    produced them."""
    figs = {"accuracy_vs_size": accuracy_vs_size(intervals, pairs, methods, params)}
    if ((intervals["metric"] == "pgr") & (intervals["capability"] == "average")).any():
        figs["pgr"] = pgr(intervals, pairs, methods, params)
    present = set(notes["analysis"]) if not notes.empty else set()
    if present & set(PANELS):
        figs["consistency"] = consistency(notes, pairs, params)
    if "selection" in present:
        figs["selection"] = selection(notes, pairs)
    return figs


def render(fig: Figure) -> dict[str, bytes]:
    """PNG and SVG bytes of a figure (then closed: figures hold memory until closed)."""
    out = {}
    # No date and a fixed id salt in the SVG: the same rows give the same file.
    with matplotlib.rc_context({"svg.hashsalt": "w2s-ray"}):
        for fmt in ("png", "svg"):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=130, metadata={"Date": None} if fmt == "svg" else None)
            out[fmt] = buffer.getvalue()
    plt.close(fig)
    return out
