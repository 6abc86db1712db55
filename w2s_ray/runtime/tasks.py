"""What a training run trains: the model class it loads, how its rows are encoded, its loss.

`SFTTask` is causal-LM fine-tuning on (prompt, label_text) rows; `DPOTask` preference optimisation
on (prompt, chosen, rejected) rows against stored reference log-probabilities; `RewardTask` the reward model
of paper Eq. 7, `AutoModelForSequenceClassification` with two labels (a fresh linear head on the
last non-pad token), class-balanced within each capability: consistent samples usually outnumber
the inconsistent ones, and an unweighted classifier would learn to keep everything. A task
object travels inside the train loop's config, so it holds no state beyond what it needs to be
rebuilt on a worker.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from w2s_ray.config import TrainHParams
from w2s_ray.models.tokenizer import load_tokenizer
from w2s_ray.runtime.encoding import (
    Buckets,
    encode_buckets,
    encode_pairs,
    encode_preferences,
    length_report,
)


def answer_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """How many tokens a causal LM is scored on in `batch`: its labels after the shift by one."""
    return (batch["labels"][:, 1:] != -100).sum()


def lm_loss(model, batch: dict[str, torch.Tensor], total: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy of the batch's answer tokens over `total`, the answer tokens of
    the whole step: a step's loss is the mean over every answer token of its global batch
    however it is split (transformers' `num_items_in_batch`). Each token weighs the same, as in a
    single unsplit batch of the paper's Hugging Face fine-tuning."""
    return model(**batch, num_items_in_batch=total).loss


class SFTTask:
    """Causal-LM fine-tuning on (prompt, label_text) rows."""

    loss = staticmethod(lm_loss)
    total = staticmethod(answer_tokens)

    def load(self, path: str):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def empty(self, path: str):
        """The architecture without weights (built under the meta device by FSDP's ranks > 0)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)

    def buckets(self, tok, df, hp: TrainHParams) -> Buckets:
        return encode_buckets(tok, df, hp.max_length)

    @staticmethod
    def lengths(tok, df, hp: TrainHParams) -> dict[str, dict[str, int]]:
        return length_report(tok, df, hp.max_length)


def balanced_weights(df: pd.DataFrame) -> pd.Series:
    """Per capability, each class carries half the weight, whatever its count."""
    counts = df.groupby(["capability", "target"])["target"].transform("size")
    per_cap = df.groupby("capability")["target"].transform("size")
    return per_cap / (2.0 * counts)


class RewardTask:
    """The reward model's classifier and its class-balanced loss."""

    def load(self, path: str):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)
        # Pooling finds the last token by the pad id; base checkpoints often leave it unset.
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
        return model

    def empty(self, path: str):
        """The architecture without weights (built under the meta device by FSDP's ranks > 0)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification

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
    def total(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The class-balancing weight of the rows: a step's loss is normalised by its global
        batch's, so the balance holds at any micro-batch size, one row included."""
        return batch["weight"].sum()

    @staticmethod
    def loss(model, batch: dict[str, torch.Tensor], total: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_row = F.cross_entropy(logits.float(), batch["target"], reduction="none")
        return (per_row * batch["weight"]).sum() / total


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's summed log-probability of its scored tokens (labels other than -100, after the
    causal shift by one): log pi(answer | prompt)."""
    targets = labels[:, 1:]
    scored = targets != -100
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * scored).sum(-1)


class DPOTask(SFTTask):
    """DPO with the sigmoid loss (Rafailov et al. 2023): -log sigmoid(beta * (chosen's log-ratio -
    rejected's)), each log-ratio log pi - log pi_ref summed over the answer tokens and the EOS.
    The reference's log-probabilities come with the rows (`logp_chosen`, `logp_rejected`,
    computed once by an inference stage), so a run holds one model. A step's loss is the mean over
    the pairs of its global batch whatever the split, as SFT's is over its answer tokens."""

    def __init__(self, beta: float):
        self.beta = beta

    def buckets(self, tok, df: pd.DataFrame, hp: TrainHParams) -> Buckets:
        out = []
        for _, g in df.groupby("capability", sort=True):
            enc = encode_preferences(tok, g["prompt"].tolist(), g["chosen"].tolist(), g["rejected"].tolist(),
                                     hp.max_length)
            ref = torch.tensor(g[["logp_chosen", "logp_rejected"]].to_numpy(), dtype=torch.float32)
            out.append({**enc, "ref_logps": ref})
        return out

    @staticmethod
    def lengths(tok, df: pd.DataFrame, hp: TrainHParams) -> dict[str, dict[str, int]]:
        answers = pd.concat([df.assign(label_text=df[c]) for c in ("chosen", "rejected")], ignore_index=True)
        return length_report(tok, answers, hp.max_length)

    @staticmethod
    def total(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pairs of the rows."""
        return torch.tensor(float(len(batch["input_ids"])))

    def loss(self, model, batch: dict[str, torch.Tensor], total: torch.Tensor) -> torch.Tensor:
        # Chosen and rejected in one forward (2 sequences per pair), as TRL's concatenated forward.
        logits = model(input_ids=batch["input_ids"].flatten(0, 1),
                       attention_mask=batch["attention_mask"].flatten(0, 1)).logits
        logps = sequence_logps(logits, batch["labels"].flatten(0, 1)).view(-1, 2)
        ratios = logps - batch["ref_logps"]
        return -F.logsigmoid(self.beta * (ratios[:, 0] - ratios[:, 1])).sum() / total


#: the training stage's task names (`stages/train.py`) -> what runs them
TASKS = {"sft": SFTTask, "reward_model": RewardTask, "dpo": DPOTask}
