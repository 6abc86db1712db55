"""The reward model (paper Eq. 7): a binary classifier over (prompt, label text).

Positives are the consistent samples D^c (with the weak label), negatives the strong model's
inconsistent labels D̂^c. It is `AutoModelForSequenceClassification` with two labels, initialised
from the strong *base* checkpoint (a fresh linear head on the last non-pad token's hidden
state), rather than a head bolted onto the causal LM: it is the architecture Hugging Face and
TRL use for reward models, `from_pretrained` builds it from any causal checkpoint of the family,
and vLLM's pooling runner serves the same class. Two softmax logits are logistic regression
(Eq. 7's binary cross-entropy) with p(good) = softmax[1].

The loss is class-balanced within each capability: consistent samples usually outnumber the
inconsistent ones, and an unweighted classifier would learn to keep everything (the classifier
and its loss: `runtime/tasks.py`).
"""

from __future__ import annotations

import hashlib

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.models import speed
from w2s_ray.models.location import ModelRef
from w2s_ray.runtime.choose import key_backend
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.data import TABLE, read
from w2s_ray.stages.tables import derive
from w2s_ray.stages.train import train

# 2: scorers encode at the reward model's training max_length (they used a fixed 256)
VERSION = 2


def fold_of(uid: str, k: int) -> int:
    return int(hashlib.sha256(uid.encode()).hexdigest(), 16) % k


def training_rows(pair: pd.DataFrame) -> pd.DataFrame:
    """Positives D^c (prompt, weak label) and negatives D̂^c (prompt, strong label)."""
    pos = pair[pair["consistent"]].assign(label_text=lambda d: d["label_text_weak"], target=1)
    neg = pair[~pair["consistent"]].assign(label_text=lambda d: d["label_text_strong"], target=0)
    return pd.concat([pos, neg], ignore_index=True)[["uid", "capability", "prompt", "label_text", "target"]]


def scoring_rows(pair: pd.DataFrame) -> pd.DataFrame:
    """Every weak sample (what selection keeps or drops) plus the negatives (for the reward
    model's accuracy on its own training data)."""
    weak = pair.assign(label_text=pair["label_text_weak"], answer=pair["answer_weak"],
                       role="weak", target=pair["consistent"].astype(int))
    neg = pair[~pair["consistent"]].assign(label_text=lambda d: d["label_text_strong"],
                                           answer=lambda d: d["answer_strong"], role="negative", target=0)
    return pd.concat([weak, neg], ignore_index=True)[
        ["uid", "capability", "prompt", "label_text", "answer", "role", "target"]]


def train_reward(ctx: StageContext, strong_base: ModelRef, rows: Artifact) -> ModelRef:
    return ctx.model(train(ctx, strong_base, rows, "reward_model", "reward", tag="reward"))


def score(ctx: StageContext, model: ModelRef, df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Backend as for generation; the vLLM scorer itself falls back to transformers (logged)
    where vLLM does not serve the reward model's architecture."""
    from w2s_ray.runtime.inference import SCORERS, map_with_model

    max_length = ctx.layout(model.rung).reward.max_length
    scored, ran = map_with_model(ctx.layout(model.rung).inference, ctx.store, model, df, SCORERS, ["score"],
                                 max_length, {"max_length": max_length})
    return scored, ran


def reward_scores(ctx: StageContext, strong_base: ModelRef, partition: Artifact) -> Artifact:
    """R's p(good) for every weak sample and every negative. With `reward.cross_fit: k`, k models
    are trained on folds (by prompt) and each row is scored by the model that never saw its prompt."""
    k = ctx.config.reward.cross_fit
    folds = range(k) if k else [None]
    models = {}
    for fold in folds:
        keep = (lambda df: df) if fold is None else (lambda df, f=fold: df[[fold_of(u, k) != f for u in df["uid"]]])
        rows = derive(ctx, "reward_rows", 1, [partition], {"folds": k, "fold": fold},
                      lambda pair, keep=keep: keep(training_rows(pair)))
        models[fold] = train_reward(ctx, strong_base, rows)
    inf = ctx.layout(strong_base.rung).inference
    art = Artifact.make("reward_scores", VERSION, [partition.id, *[m.id for m in models.values()]],
                        {"dtype": inf.dtype, **key_backend(inf)})

    def build(folder: str) -> dict:
        rows = scoring_rows(read(ctx, partition))
        parts, passes = [], []
        for fold, model in models.items():
            mine = rows if fold is None else rows[[fold_of(u, k) == fold for u in rows["uid"]]]
            scored, ran = score(ctx, model, mine)
            parts.append(scored)
            passes.append(ran["throughput"])
        out = pd.concat(parts, ignore_index=True)
        ctx.store.write_table(f"{folder}/{TABLE}", out)
        measured = speed.combined(passes)
        return {"rows": len(out), "compute_seconds": measured["compute_seconds"], "throughput": measured}

    return ctx.builder.ensure(art, build, tag="reward_scores")
