"""Model backends behind one small interface: a callable over Ray Data batches.

A backend is a class whose constructor `(path, torch_threads, dtype, **options)` loads the model
once (per Ray Data actor) and whose `__call__` maps a numpy batch to one with new columns and a
per-row `compute_seconds` (and, for the throughput table, `prompt_tokens` and `generated_tokens`:
a backend without them leaves the table's token figures empty). Generators map `prompt`, `max_new_tokens` and optionally `stop` to a
greedy `completion`: every row ends at its own budget, at EOS, or just after its stop string,
whichever comes first, in every backend, so their outputs can be compared token for token. A row
with `temperature` and `sample_seed` is sampled instead, from its own seeded stream, so its
sample does not depend on the rows it is batched with.
Scorers map `prompt` and `label_text` to the reward model's `score`, p(label is good), on rows
encoded exactly as the reward model was trained (`reward.encode_pairs` at its max_length). The
vLLM backends live in `vllm_backend` (an optional extra); `inference.py` names both. Log-probers
map `prompt` and `label_text` to `logp`, log p(label and EOS | prompt) under a causal model, and
`confidence`, that log-probability per token, on rows encoded exactly as supervised training
encodes them (`encoding.encode` at the model's training max_length).
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
INPUTS = ("prompt", "max_new_tokens", "stop", "label_text", "temperature", "sample_seed")


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


class SeededSampling:
    """Sampling at each row's temperature by the Gumbel-max trick, as a logits processor before
    greedy decoding: argmax(logits / T + Gumbel noise) is a draw from softmax(logits / T), and the
    noise comes from each row's own generator, so a row's sample is a function of its seed and
    its logits alone, whatever batch it is in."""

    def __init__(self, seeds: list[int], temperatures: list[float]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32).unsqueeze(1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        noise = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1.0 - 1e-7)))
        return scores.float() / self.temperatures.to(scores.device) + gumbel.to(scores.device)


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
        sampled = {"logits_processor": [SeededSampling(batch["sample_seed"].tolist(),
                                                       batch["temperature"].tolist())]} if "sample_seed" in batch else {}
        out = self.model.generate(
            **enc, max_new_tokens=int(budgets.max()), do_sample=False,
            eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id, **sampled,
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


def answer_logps(model, tok, prompts: list[str], labels: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(label and EOS | prompt), how many tokens that sums) per row, over the tokens
    supervised training scores (`encoding.encode` at `max_length`): DPO's reference terms, an
    implicit reward's, and the weak model's confidence (their ratio)."""
    from w2s_ray.runtime.encoding import encode
    from w2s_ray.runtime.tasks import sequence_logps

    enc = encode(tok, prompts, labels, max_length)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return sequence_logps(logits, enc["labels"]).cpu(), (enc["labels"][:, 1:] != -100).sum(-1).cpu()


class TransformersLogProbs:
    """A causal model's log-probabilities of given answers (`logp`) and their mean per token
    (`confidence`), right-padded, in `dtype`; on GPUs its layers are spread over all of the
    actor's (a 72B model fills more than one)."""

    def __init__(self, path: str, torch_threads: int, dtype: str, max_length: int, device: str = "cpu"):
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(torch_threads)
        self.max_length = max_length
        self.tok = load_tokenizer(path)
        placed = {"device_map": "auto"} if device == "cuda" else {}
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **placed).eval()

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        logps, counts = answer_logps(self.model, self.tok, [str(p) for p in batch["prompt"]],
                                     [str(t) for t in batch["label_text"]], self.max_length)
        batch["logp"] = logps.double().numpy()
        batch["confidence"] = (logps / counts.clamp_min(1)).numpy()
        batch["compute_seconds"] = np.full(len(logps), (time.perf_counter() - start) / len(logps))
        return batch