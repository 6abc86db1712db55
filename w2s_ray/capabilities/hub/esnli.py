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
upstream: a short label keeps exact-match scoring exact).
"""

from __future__ import annotations

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import HubCapability, label_word
from w2s_ray.capabilities.registry import register

WORDS = ("entailment", "neutral", "contradiction")


class ESNLI(HubCapability):
    name = "esnli"
    hub_id = "esnli/esnli"
    revision = "refs/convert/parquet"
    hub_data_dir = "plain_text"
    card_rows = (549367, 9824)
    max_new_tokens = 4

    def to_example(self, row: dict) -> Example | None:
        if row["label"] not in WORDS:
            return None
        prompt = (f"Premise: {row['premise'].strip()}\nHypothesis: {row['hypothesis'].strip()}\n"
                  "Does the premise entail the hypothesis? Answer entailment, neutral or contradiction."
                  "\nAnswer:")
        return Example(prompt, row["label"], row["label"])

    def extract(self, completion: str) -> str | None:
        return label_word(completion, WORDS)


register(ESNLI())
