"""MC-TACO (Zhou et al. 2019): is a candidate answer to a temporal question plausible? yes / no.

Confirmed (2026-11-22) on the loading script `datasets/mc_taco/mc_taco.py` of huggingface/datasets
(the script the hub repo `CogComp/mc_taco` still holds, https://huggingface.co/datasets/CogComp/mc_taco):
config `plain_text`; features `sentence`, `question`, `answer` (strings), `label`
ClassLabel(["no", "yes"]), `category` ClassLabel(["Event Duration", "Event Ordering",
"Frequency", "Typical Time", "Stationarity"]); splits from `dev_3783.tsv` (validation, 3,783
rows) and `test_9442.tsv` (test, 9,442). There is **no train split**: D^a and D^b are carved
from validation, test from test. `datasets` >= 4 refuses the script, so the loader reads the
hub's Parquet conversion: `load_dataset("CogComp/mc_taco", revision="refs/convert/parquet",
data_dir="plain_text")` (folders `plain_text/validation/`, `plain_text/test/`, seen at
https://huggingface.co/datasets/CogComp/mc_taco/tree/refs%2Fconvert%2Fparquet/plain_text/validation).

Prompt: the sentence, the question, the candidate answer, "Is the candidate answer plausible?
Answer yes or no."; label and gold "yes" / "no". The validation split holds 3,783 candidate
answers to ~561 (sentence, question) pairs: each pair is one group, so its candidates are all in
D^a or all in D^b (carved by row, ~85% of D^b's rows shared a question with D^a at 1,000/1,000).
"""

from __future__ import annotations

from typing import ClassVar

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import Dropped, HubCapability, example, label_word
from w2s_ray.capabilities.registry import register

WORDS = ("yes", "no")
CATEGORIES = ("Event Duration", "Event Ordering", "Frequency", "Typical Time", "Stationarity")


class MCTaco(HubCapability):
    name = "mc_taco"
    hub_id = "CogComp/mc_taco"
    revision = "refs/convert/parquet"
    hub_data_dir = "plain_text"
    train_split = "validation"
    card_rows = (3783, 9442)
    max_new_tokens = 4
    label_names: ClassVar[dict[str, tuple[str, ...]]] = {"label": ("no", "yes"), "category": CATEGORIES}
    # a next example opens with its sentence, after the blank line between examples
    stop = "\n\n"

    def to_example(self, row: dict) -> Example | Dropped:
        if row["label"] not in WORDS:
            return Dropped("no gold label (-1)" if row["label"] is None else f"label {row['label']!r} not in {WORDS}")
        sentence, question = row["sentence"].strip(), row["question"].strip()
        prompt = (f"{sentence}\nQuestion: {question}\nCandidate answer: {row['answer'].strip()}\n"
                  "Is the candidate answer plausible? Answer yes or no.\nAnswer:")
        # one question's candidate answers stay in one split
        return example(prompt, row["label"], row["label"], group=f"{sentence}\nQuestion: {question}")

    def extract(self, completion: str) -> str | None:
        return label_word(completion, WORDS)


register(MCTaco())
