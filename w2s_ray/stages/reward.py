"""The reward model (paper Eq. 7): a binary classifier over (prompt, label text).

Positives are the consistent samples D^c (with the weak label), negatives the strong model's
inconsistent labels D̂^c. It is `AutoModelForSequenceClassification` with two labels, initialised
from the strong *base* checkpoint (a fresh linear head on the last non-pad token's hidden
state), rather than a head bolted onto the causal LM: it is the architecture Hugging Face and
TRL use for reward models, `from_pretrained` builds it from any causal checkpoint of the family,
and vLLM's pooling runner serves the same class. Two softmax logits are logistic regression
(Eq. 7's binary cross-entropy) with p(good) = softmax[1].

The loss is class-balanced within each capability: consistent samples usually outnumber the
inconsistent ones, and an unweighted classifier would learn to keep everything.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import torch
import torch.nn.functional as F

from w2s_ray.artifacts import Artifact
from w2s_ray.config import TrainHParams
from w2s_ray.models.tokenizer import prompt_ids
from w2s_ray.stages.backends import SCORERS
from w2s_ray.stages.choose import key_backend
from w2s_ray.stages.context import ModelRef, StageContext
from w2s_ray.stages.data import TABLE, read
from w2s_ray.stages.generate import map_with_model, stage_inference
from w2s_ray.stages.tables import derive
from w2s_ray.stages.train import Buckets, train

# 2: scorers encode at the reward model's training max_length (they used a fixed 256)
VERSION = 2


def encode_pairs(tok, prompts: list[str], labels: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """BOS + prompt + label, right-padded; too long rows lose their *start*, since the classifier
    reads the last token and the label is what is judged. The one encoding of the reward model:
    training and every scorer call it with the training run's `max_length`."""
    rows = [(prompt_ids(tok, p) + tok(lab, add_special_tokens=False)["input_ids"])[-max_length:]
            for p, lab in zip(prompts, labels)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def balanced_weights(df: pd.DataFrame) -> pd.Series:
    """Per capability, each class carries half the weight, whatever its count."""
    counts = df.groupby(["capability", "target"])["target"].transform("size")
    per_cap = df.groupby("capability")["target"].transform("size")
    return per_cap / (2.0 * counts)


class RewardTask:
    """Training task for stages/train.py: the classifier and its class-balanced loss."""

    # 2: a batch never mixes capabilities; the batch plan no longer depends on the number of ranks
    stage, version = "reward_model", 2

    def load(self, path: str):
        from transformers import AutoModelForSequenceClassification

        from w2s_ray.models.tokenizer import load_tokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)
        # Pooling finds the last token by the pad id; base checkpoints often leave it unset.
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
        return model

    def empty(self, path: str):
        """The architecture without weights (built under the meta device by FSDP's ranks > 0)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification

        from w2s_ray.models.tokenizer import load_tokenizer

        config = AutoConfig.from_pretrained(path, num_labels=2)
        config.pad_token_id = load_tokenizer(path).pad_token_id
        return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)

    def buckets(self, tok, df: pd.DataFrame, hp: TrainHParams) -> Buckets:
        df = df.assign(weight=balanced_weights(df))
        out = []
        for _, g in df.groupby("capability", sort=True):
            enc = encode_pairs(tok, g["prompt"].tolist(), g["label_text"].tolist(), hp.max_length)
            out.append({**enc, "target": torch.tensor(g["target"].to_numpy()),
                        "weight": torch.tensor(g["weight"].to_numpy(), dtype=torch.float32)})
        return out

    @staticmethod
    def lengths(tok, df: pd.DataFrame, hp: TrainHParams) -> dict:
        """Nothing to report: a row too long loses its prompt's start, by design (encode_pairs)."""
        return {}

    @staticmethod
    def loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_row = F.cross_entropy(logits.float(), batch["target"], reduction="none")
        return (per_row * batch["weight"]).sum() / batch["weight"].sum()


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


def hparams(ctx: StageContext) -> TrainHParams:
    spec = ctx.config.reward
    update = {k: v for k, v in {"lr": spec.lr, "epochs": spec.epochs}.items() if v is not None}
    # The classifier head starts from scratch: there is no base to average it toward.
    return ctx.config.train.model_copy(update={**update, "toward_base": 0.0})


def train_reward(ctx: StageContext, strong_base: ModelRef, rows: Artifact) -> ModelRef:
    return ctx.model(train(ctx, strong_base, rows, RewardTask(), hparams(ctx), tag="reward"))


def score(ctx: StageContext, model: ModelRef, df: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Backend as for generation; the vLLM scorer itself falls back to transformers (logged)
    where vLLM does not serve the reward model's architecture."""
    max_length = hparams(ctx).max_length
    scored, ran = map_with_model(ctx, model, df, SCORERS, ["score"], max_length, {"max_length": max_length})
    return scored, ran["compute_seconds"]


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
    inf = stage_inference(ctx, strong_base)
    art = Artifact.make("reward_scores", VERSION, [partition.id, *[m.id for m in models.values()]],
                        {"dtype": inf.dtype, **key_backend(inf)})

    def build(folder: str) -> dict:
        rows = scoring_rows(read(ctx, partition))
        parts, compute = [], 0.0
        for fold, model in models.items():
            mine = rows if fold is None else rows[[fold_of(u, k) == fold for u in rows["uid"]]]
            scored, seconds = score(ctx, model, mine)
            parts.append(scored)
            compute += seconds
        out = pd.concat(parts, ignore_index=True)
        ctx.store.write_table(f"{folder}/{TABLE}", out)
        return {"rows": len(out), "compute_seconds": compute}

    return ctx.builder.ensure(art, build, tag="reward_scores")
