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
Answer yes or no."; label and gold "yes" / "no".
"""

from __future__ import annotations

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import HubCapability, label_word
from w2s_ray.capabilities.registry import register

WORDS = ("yes", "no")


class MCTaco(HubCapability):
    name = "mc_taco"
    hub_id = "CogComp/mc_taco"
    revision = "refs/convert/parquet"
    hub_data_dir = "plain_text"
    train_split = "validation"
    card_rows = (3783, 9442)
    max_new_tokens = 4

    def to_example(self, row: dict) -> Example | None:
        if row["label"] not in WORDS:
            return None
        prompt = (f"{row['sentence'].strip()}\nQuestion: {row['question'].strip()}\n"
                  f"Candidate answer: {row['answer'].strip()}\n"
                  "Is the candidate answer plausible? Answer yes or no.\nAnswer:")
        return Example(prompt, row["label"], row["label"])

    def extract(self, completion: str) -> str | None:
        return label_word(completion, WORDS)


register(MCTaco())
