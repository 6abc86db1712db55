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


def prior_matched(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The class of each row of `scores` (rows x classes, higher = likelier) such that class k
    is given to exactly `counts[k]` rows (`counts` sums to the rows): every row takes its likeliest
    class that still has room, and a class claimed by more rows than it has room for keeps the
    most confident claimants, round after round. With two classes this is Burns et al.'s
    threshold at the weak labels' quantile: the `counts[1]` rows likeliest to be class 1 get it."""
    rows, classes = scores.shape
    scores = scores.float().clamp_min(torch.finfo(torch.float32).min / 2)
    out = torch.full((rows,), -1, dtype=torch.long, device=scores.device)
    room = counts.clone().to(scores.device)
    while (open_ := (out < 0).nonzero().squeeze(1)).numel():
        best = scores[open_].masked_fill(room == 0, float("-inf"))
        conf, choice = best.max(1)
        order = conf.argsort(descending=True, stable=True)
        order = order[choice[order].argsort(stable=True)]  # by class, most confident first
        claimed = choice[order]
        rank = torch.arange(len(claimed), device=scores.device) - torch.searchsorted(claimed, claimed)
        won = rank < room[claimed]
        out[open_[order[won]]] = claimed[won]
        room -= torch.bincount(claimed[won], minlength=classes)
    return out


def answer_offsets(labels: torch.Tensor) -> torch.Tensor:
    """Each scored position's index within its row's answer (0 = the answer's first token), -1
    where nothing is scored; positions are those of `labels[:, 1:]`, the shifted targets."""
    scored = labels[:, 1:] != -100
    return torch.where(scored, scored.long().cumsum(1) - 1, -1)


def hardened(scores: torch.Tensor, vocab: torch.Tensor, weak: torch.Tensor,
             offsets: torch.Tensor) -> torch.Tensor:
    """The student's hardened token at every scored position: `scores` (positions x `vocab`) are
    its logits at the tokens `vocab` (sorted) the weak labels use; `weak` and `offsets` the weak
    token and answer offset of each position. Per answer offset, the classes are the tokens the
    weak labels hold there and their prior the weak labels' counts; each position takes the class
    `prior_matched` gives it by the student's log-probabilities restricted to those tokens."""
    out = torch.empty_like(weak)
    for offset in offsets.unique().tolist():
        at = (offsets == offset).nonzero().squeeze(1)
        classes, counts = weak[at].unique(return_counts=True)
        restricted = torch.log_softmax(scores[at][:, torch.searchsorted(vocab, classes)].float(), -1)
        out[at] = classes[prior_matched(restricted, counts)]
    return out


class ConfidenceSFTTask(SFTTask):
    """Burns et al.'s auxiliary confidence loss on answer tokens (openai/weak-to-strong's
    `logconf`, with its later warm-up fix: a rises as step_frac / warmup, not as step_frac):
    per answer token, (1 - a) CE(weak token) + a CE(hardened token), a = weight x min(1,
    step_frac / warmup), summed over the micro-batch and divided by the global batch's answer
    tokens like `lm_loss`.

    A generative student's "prediction" is its answer tokens: the hardened label of a position
    is the token the student, fed the weak label's prefix, gives it once each answer offset's
    labels are made to follow the weak labels' prior there (`hardened`). On a one-token answer
    (yes / no, a letter, a kind word) this is Burns et al.'s binary / multi-class threshold over
    the classes the batch's weak labels use; on a longer answer, the hardening of each token of
    the student's continuation of the weak prefix. The prior and the hardening are those of the
    whole global batch, never of a micro-batch (the reference code takes the quantile per
    micro-batch): `prepare` scores every rank's rows without gradients, gathers the scores, and
    every rank hardens the same global batch, so the objective is one whatever the layout, at
    the price of one extra forward pass per step."""

    def __init__(self, weight: float, warmup: float):
        self.weight, self.warmup = weight, warmup

    def alpha(self, step_frac: float) -> float:
        return self.weight * (min(1.0, step_frac / self.warmup) if self.warmup else 1.0)

    def prepare(self, model, bucket: dict[str, torch.Tensor], idx: torch.Tensor, parts: list[torch.Tensor],
                world: int, dev: torch.device, step_frac: float, hp: TrainHParams) -> dict[str, torch.Tensor]:
        """Per row of this rank's micro-batches (`parts`, row indices into `bucket`; a
        placeholder row where the rank holds none of `idx`): its hardened labels, shaped as its
        `labels`, and the step's a. A collective when `world` > 1: every rank calls it."""
        from w2s_ray.runtime import parallel

        labels = bucket["labels"][idx]
        offsets = answer_offsets(labels)
        scored = offsets >= 0
        weak = labels[:, 1:][scored]
        vocab = weak.unique()
        scores = []
        with torch.no_grad():
            for micro in parts:
                batch = {k: v[micro].to(dev) for k, v in bucket.items()}
                with parallel.autocast(hp, dev):
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                at = batch["labels"][:, 1:] != -100
                # the label tokens' columns first: a (positions x vocabulary) copy would not fit at 150K
                scores.append(logits[:, :-1, vocab.to(dev)][at].float())
        scores = torch.cat(scores)
        scores = gathered(scores, bucket["labels"], idx, world, dev) if world > 1 else scores
        full = labels.clone()
        full[:, 1:][scored] = hardened(scores.cpu(), vocab, weak, offsets[scored])
        where = {int(r): i for i, r in enumerate(idx)}
        mine = torch.cat(parts)
        return {"hard_labels": full[[where[int(r)] for r in mine]],
                "alpha": torch.full((len(mine),), self.alpha(step_frac))}

    @staticmethod
    def loss(model, batch: dict[str, torch.Tensor], total: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        scored = batch["labels"][:, 1:] != -100
        logits = logits[:, :-1][scored].float()
        weak = F.cross_entropy(logits, batch["labels"][:, 1:][scored], reduction="sum")
        hard = F.cross_entropy(logits, batch["hard_labels"][:, 1:][scored], reduction="sum")
        alpha = batch["alpha"][0]
        return ((1 - alpha) * weak + alpha * hard) / total


def gathered(scores: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, world: int,
             dev: torch.device) -> torch.Tensor:
    """Every rank's scored positions in global-batch order (the ranks hold `idx`'s consecutive
    parts, as the trainer splits it); each rank knows every rank's count from the labels."""
    counts = [int((labels[part][:, 1:] != -100).sum()) for part in idx.tensor_split(world)]
    rank = torch.distributed.get_rank()
    padded = torch.zeros((max(counts), scores.shape[1]), dtype=scores.dtype, device=dev)
    padded[: counts[rank]] = scores[: counts[rank]]
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts)])


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
#: the supervised losses besides cross-entropy (`stages/train.py`'s `loss`) -> what runs them
LOSSES = {"logconf": ConfidenceSFTTask}
