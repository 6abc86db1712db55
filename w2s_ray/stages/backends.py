"""Model backends behind one small interface: a callable over Ray Data batches.

A backend is a class whose constructor `(path, torch_threads, dtype)` loads the model once (per
Ray Data actor) and whose `__call__` maps a numpy batch to one with new columns and a per-row
`compute_seconds`. Generators map `prompt` and `max_new_tokens` to a greedy `completion`;
scorers map `prompt` and `label_text` to the reward model's `score`, p(label is good).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from w2s_ray.models.tokenizer import load_tokenizer, prompt_ids


class TransformersBackend:
    """Batched, left-padded greedy `generate` with the KV cache."""

    def __init__(self, path: str, torch_threads: int, dtype: str):
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(torch_threads)
        self.tok = load_tokenizer(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        enc = self.tok.pad({"input_ids": [prompt_ids(self.tok, p) for p in batch["prompt"]]},
                           return_tensors="pt")
        out = self.model.generate(
            **enc, max_new_tokens=int(batch["max_new_tokens"].max()), do_sample=False,
            eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        batch["completion"] = np.array(self.tok.batch_decode(new, skip_special_tokens=True), dtype=object)
        # Each row carries its share of the batch's compute time, so sums over rows add up.
        batch["compute_seconds"] = np.full(len(new), (time.perf_counter() - start) / len(new))
        return batch


class TransformersScorer:
    """The reward model (a 2-class sequence classifier) over right-padded (prompt, label) rows."""

    def __init__(self, path: str, torch_threads: int, dtype: str):
        from transformers import AutoModelForSequenceClassification

        from w2s_ray.stages.reward import encode_pairs

        torch.set_num_threads(torch_threads)
        self.encode = encode_pairs
        self.tok = load_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=getattr(torch, dtype)).eval()

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        enc = self.encode(self.tok, list(batch["prompt"]), list(batch["label_text"]))
        logits = self.model(**enc).logits.float()
        batch["score"] = torch.softmax(logits, -1)[:, 1].numpy()
        batch["compute_seconds"] = np.full(len(logits), (time.perf_counter() - start) / len(logits))
        return batch


BACKENDS = {"transformers": TransformersBackend}
SCORERS = {"transformers": TransformersScorer}
