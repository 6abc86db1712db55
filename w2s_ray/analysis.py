"""The paper's analyses of a pair, as tidy rows (analysis, capability, metric, value) saved beside
the metrics. They read D^b's gold labels, which no method may: they describe, never decide.

- partition: sizes of D^c, D̄^c (= D̂^c) and D^b (Eq. 6);
- wts_vs_weak, wts2_vs_wts: Fig. 5 / Fig. 6 category fractions, and each label set's accuracy;
- reward: the reward model's accuracy on its own training data (positives D^c, negatives D̂^c),
  or, with `reward.cross_fit` >= 2, on those samples scored by the fold model that never saw
  them (`out_of_fold_accuracy`);
- selection: size, retention, true accuracy of D̈^b vs the weak and strong labels' (Fig. 11),
  and whether the empty-selection fallback fired;
- selected_categories: the Fig. 5 make-up of D̈^b (Fig. 12).
"""

from __future__ import annotations

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.methods import ablations, pipeline
from w2s_ray.stages import data
from w2s_ray.stages.categories import CATEGORIES
from w2s_ray.stages.consistency import categories, partition_frame
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.generate import generate
from w2s_ray.stages.select import correct_mask

SELECTION_METHODS = {"ours", "ours-random", "ours-one-stage"}
RELABEL_METHODS = SELECTION_METHODS | {"wts2", "mixed"}


def tidy(analysis: str, per_cap: pd.DataFrame) -> pd.DataFrame:
    """A capability-indexed frame of metrics -> rows, plus the average over capabilities."""
    per_cap = pd.concat([per_cap, per_cap.mean().to_frame("average").T])
    long = per_cap.rename_axis("capability").reset_index().melt(
        id_vars="capability", var_name="metric", value_name="value")
    return long.assign(analysis=analysis)[["analysis", "capability", "metric", "value"]]


def category_fractions(pair: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    cats = categories(pair, gold)
    frac = pd.crosstab(pair["capability"], cats, normalize="index")
    return frac.reindex(columns=list(CATEGORIES), fill_value=0.0).astype(float)


def accuracy(df: pd.DataFrame, gold: pd.DataFrame) -> pd.Series:
    return correct_mask(df, gold).groupby(df["capability"]).mean()


def label_comparison(weak: pd.DataFrame, strong: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    pair = partition_frame(weak, strong)
    out = category_fractions(pair, gold)
    out["weak_label_accuracy"] = accuracy(weak, gold)
    out["strong_label_accuracy"] = accuracy(strong, gold)
    return out


def pair_artifacts(ctx: StageContext, weak: str, strong: str, methods: list[str]) -> dict[str, Artifact]:
    """The artifacts the pair's analyses read (built if missing); none unless a method relabels."""
    if not RELABEL_METHODS & set(methods):
        return {}
    arts = {"gold": data.split_table(ctx, "unlabeled", with_gold_labels=True),
            "weak": pipeline.weak_labels(ctx, weak), "strong": pipeline.relabel(ctx, weak, strong),
            "pair": pipeline.consistency(ctx, weak, strong)}
    if "wts2" in methods:
        arts["wts2"] = generate(ctx, ablations.wts2(ctx, weak, strong), pipeline.unlabeled_prompts(ctx),
                                tag="relabel_wts2", along=pipeline.evaluated_along(ctx, "wts2", weak, strong))
    if SELECTION_METHODS & set(methods):
        arts |= {"scores": pipeline.scores(ctx, weak, strong), "selected": pipeline.selected(ctx, weak, strong)}
    return arts


def pair_rows(ctx: StageContext, weak: str, strong: str, methods: list[str]) -> pd.DataFrame:
    arts = pair_artifacts(ctx, weak, strong, methods)
    if not arts:
        return pd.DataFrame(columns=["analysis", "capability", "metric", "value"])
    frames = []
    gold, weak_df, strong_df, pair = (data.read(ctx, arts[k]) for k in ("gold", "weak", "strong", "pair"))
    by_cap = pair.groupby("capability")["consistent"]
    frames.append(tidy("partition", pd.DataFrame({
        "n_unlabeled": by_cap.size(), "n_consistent": by_cap.sum(),
        "n_inconsistent": by_cap.size() - by_cap.sum()}).astype(float)))
    frames.append(tidy("wts_vs_weak", label_comparison(weak_df, strong_df, gold)))
    if "wts2" in arts:
        frames.append(tidy("wts2_vs_wts", label_comparison(strong_df, data.read(ctx, arts["wts2"]), gold)))
    if "selected" in arts:
        frames += selection_frames(ctx, arts, pair, weak_df, strong_df, gold)
    return pd.concat(frames, ignore_index=True)


def selection_frames(ctx, arts, pair, weak_df, strong_df, gold) -> list[pd.DataFrame]:
    threshold = ctx.config.reward.threshold
    scored = data.read(ctx, arts["scores"])
    hit = (scored["score"] > threshold).astype(int) == scored["target"]
    trained = scored[(scored["role"] == "negative") | (scored["target"] == 1)]
    # with cross-fitting each sample was scored by a model that did not train on it
    measured = "out_of_fold_accuracy" if ctx.config.reward.cross_fit else "train_accuracy"
    reward = pd.DataFrame({
        measured: hit[trained.index].groupby(trained["capability"]).mean(),
        "positive_accuracy": hit[scored["target"] == 1].groupby(scored["capability"]).mean(),
        "negative_accuracy": hit[scored["role"] == "negative"].groupby(scored["capability"]).mean(),
    })
    chosen = data.read(ctx, arts["selected"])
    n_weak = weak_df.groupby("capability").size()
    n_sel = chosen.groupby("capability").size().reindex(n_weak.index, fill_value=0)
    selection = pd.DataFrame({
        "n_selected": n_sel.astype(float), "retention": n_sel / n_weak,
        "selected_accuracy": accuracy(chosen, gold), "weak_accuracy": accuracy(weak_df, gold),
        "strong_accuracy": accuracy(strong_df, gold),
        "fallback": chosen.groupby("capability")["fallback"].any().astype(float),
    })
    frames = [tidy("reward", reward), tidy("selection", selection)]
    if not chosen.empty:
        made_of = category_fractions(pair[pair["uid"].isin(chosen["uid"])], gold)
        frames.append(tidy("selected_categories", made_of))
    return frames
