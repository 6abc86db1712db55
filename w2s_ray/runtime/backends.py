"""Model backends behind one small interface: a callable over Ray Data batches.

A backend is a class whose constructor `(path, torch_threads, dtype, **options)` loads the model
once (per Ray Data actor) and whose `__call__` maps a numpy batch to one with new columns and a
per-row `compute_seconds` (and, for the throughput table, `prompt_tokens` and `generated_tokens`:
a backend without them leaves the table's token figures empty). Generators map `prompt`, `max_new_tokens` and optionally `stop` to a
greedy `completion`: every row ends at its own budget, at EOS, or just after its stop string,
whichever comes first, in every backend, so their outputs can be compared token for token.
Scorers map `prompt` and `label_text` to the reward model's `score`, p(label is good), on rows
encoded exactly as the reward model was trained (`reward.encode_pairs` at its max_length).
Log-probability passes map them to a causal LM's `confidence` in the label: its mean
log-probability per token of the label and its EOS, on rows encoded exactly as supervised
training encodes them (`encoding.encode` at the model's training max_length). The vLLM backends
live in `vllm_backend` (an optional extra); `inference.py` names both.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from w2s_ray.models.tokenizer import load_tokenizer, prompt_ids

#: the columns any backend reads: only these enter a Ray Data stage, so a table's other columns
#: (answers, None where unparseable) are never converted to numpy batches and back (where None
#: turns into float NaN and Arrow refuses a column of NaN and strings)
INPUTS = ("prompt", "max_new_tokens", "stop", "label_text")


def stops_of(batch: dict[str, np.ndarray]) -> list[str]:
    return [str(s) for s in batch["stop"]] if "stop" in batch else [""] * len(batch["prompt"])


def cut_at_stop(text: str, stop: str) -> str:
    """The text up to and including the first stop string (vLLM's include_stop_str_in_output)."""
    at = text.find(stop) if stop else -1
    return text if at < 0 else text[: at + len(stop)]


def generated(row: torch.Tensor, eos: int) -> int:
    """Tokens a row decoded: up to its EOS (included); `generate` pads the rest of the batch."""
    ends = (row == eos).nonzero()
    return int(ends[0, 0]) + 1 if len(ends) else len(row)


class TransformersBackend:
    """Batched, left-padded greedy `generate` with the KV cache, on `device` (the actor's GPU when
    it holds one)."""

    def __init__(self, path: str, torch_threads: int, dtype: str, device: str = "cpu"):
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(torch_threads)
        self.tok = load_tokenizer(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        ids = [prompt_ids(self.tok, p) for p in batch["prompt"]]
        enc = self.tok.pad({"input_ids": ids}, return_tensors="pt").to(self.model.device)
        budgets = batch["max_new_tokens"].astype(int)
        out = self.model.generate(
            **enc, max_new_tokens=int(budgets.max()), do_sample=False,
            eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        # The batch runs to its longest budget; each row keeps only its own.
        texts = self.tok.batch_decode([row[:n] for row, n in zip(new, budgets)], skip_special_tokens=True)
        batch["completion"] = np.array([cut_at_stop(t, s) for t, s in zip(texts, stops_of(batch))],
                                       dtype=object)
        # Each row carries its share of the batch's compute time, so sums over rows add up.
        batch["compute_seconds"] = np.full(len(new), (time.perf_counter() - start) / len(new))
        batch["prompt_tokens"] = np.array([len(i) for i in ids])
        batch["generated_tokens"] = np.array([generated(row[:n], self.tok.eos_token_id)
                                              for row, n in zip(new, budgets)])
        return batch


class TransformersScorer:
    """The reward model (a 2-class sequence classifier) over right-padded (prompt, label) rows."""

    def __init__(self, path: str, torch_threads: int, dtype: str, max_length: int, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification

        from w2s_ray.runtime.encoding import encode_pairs

        torch.set_num_threads(torch_threads)
        self.encode = functools.partial(encode_pairs, max_length=max_length)
        self.tok = load_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype)).to(device).eval()

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        enc = self.encode(self.tok, list(batch["prompt"]), list(batch["label_text"]))
        logits = self.model(**{k: v.to(self.model.device) for k, v in enc.items()}).logits.float()
        batch["score"] = torch.softmax(logits, -1)[:, 1].cpu().numpy()
        batch["compute_seconds"] = np.full(len(logits), (time.perf_counter() - start) / len(logits))
        batch["prompt_tokens"] = enc["attention_mask"].sum(1).numpy()
        batch["generated_tokens"] = np.zeros(len(logits), dtype=int)
        return batch


def mean_label_logprob(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per row, the mean log-probability of its scored tokens (`labels` != -100, shifted by one)."""
    targets = labels[:, 1:]
    scored = targets != -100
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return ((logp * scored).sum(1) / scored.sum(1).clamp_min(1)).cpu().numpy()


class TransformersLogProb:
    """A causal LM's mean log-probability per label token (and EOS), the label fed whole."""

    def __init__(self, path: str, torch_threads: int, dtype: str, max_length: int, device: str = "cpu"):
        from transformers import AutoModelForCausalLM

        from w2s_ray.runtime.encoding import encode

        torch.set_num_threads(torch_threads)
        self.encode = functools.partial(encode, max_length=max_length)
        self.tok = load_tokenizer(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        enc = self.encode(self.tok, list(batch["prompt"]), list(batch["label_text"]))
        logits = self.model(input_ids=enc["input_ids"].to(self.model.device),
                            attention_mask=enc["attention_mask"].to(self.model.device)).logits
        batch["confidence"] = mean_label_logprob(logits, enc["labels"].to(self.model.device))
        batch["compute_seconds"] = np.full(len(logits), (time.perf_counter() - start) / len(logits))
        return batch
