"""e-SNLI (Camburu et al. 2018): does a premise entail, contradict, or say nothing of a hypothesis?

Confirmed (2026-11-22) on the hub repo https://huggingface.co/datasets/esnli (now shown as
`esnli/esnli`; the short id redirects) and its card/loading script `esnli.py`: config
`plain_text`; features `premise`, `hypothesis` (strings), `label` ClassLabel(["entailment",
"neutral", "contradiction"]), `explanation_1`, `explanation_2`, `explanation_3` (strings); splits
train 549,367, validation 9,842, test 9,824 (same counts in the TFDS catalog,
https://www.tensorflow.org/datasets/catalog/esnli). `datasets` >= 4 refuses the script, so the
loader reads the hub's Parquet conversion: `load_dataset("esnli/esnli",
revision="refs/convert/parquet", data_dir="plain_text")`. D^a/D^b from train, test from test.

Prompt "Premise: ...\\nHypothesis: ...\\nDoes the premise entail the hypothesis? Answer entailment,
neutral or contradiction.\\nAnswer:"; label and gold the label word (the explanations stay
upstream: a short label keeps exact-match scoring exact). A premise's hypotheses are one group:
SNLI's annotators wrote one hypothesis per label for each premise, so a premise in both D^a and
D^b would hand the weak model part of D^b's answer.
"""

from __future__ import annotations

from typing import ClassVar

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import Dropped, HubCapability, example, label_word
from w2s_ray.capabilities.registry import register

WORDS = ("entailment", "neutral", "contradiction")


class ESNLI(HubCapability):
    name = "esnli"
    hub_id = "esnli/esnli"
    revision = "refs/convert/parquet"
    hub_data_dir = "plain_text"
    card_rows = (549367, 9824)
    max_new_tokens = 4
    label_names: ClassVar[dict[str, tuple[str, ...]]] = {"label": WORDS}
    stop = "\nPremise:"

    def to_example(self, row: dict) -> Example | Dropped:
        if row["label"] not in WORDS:
            return Dropped("no gold label (-1)" if row["label"] is None else f"label {row['label']!r} not in {WORDS}")
        premise = row["premise"].strip()
        prompt = (f"Premise: {premise}\nHypothesis: {row['hypothesis'].strip()}\n"
                  "Does the premise entail the hypothesis? Answer entailment, neutral or contradiction."
                  "\nAnswer:")
        # a premise's hypotheses (one written per label) stay in one split
        return example(prompt, row["label"], row["label"], group=f"Premise: {premise}")

    def extract(self, completion: str) -> str | None:
        return label_word(completion, WORDS)


register(ESNLI())
