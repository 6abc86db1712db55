"""OpenBookQA (Mihaylov et al. 2018): elementary science questions with four options.

Confirmed (2026-11-22) on the dataset card https://huggingface.co/datasets/allenai/openbookqa
(README `dataset_info:`, Parquet since "Convert dataset to Parquet (#6)"): id
`allenai/openbookqa` (the old id `openbookqa` redirects), config `main` (also `additional`);
features `id`, `question_stem` (strings), `choices` (sequence of {`text`, `label`}, labels
"A".."D"), `answerKey` (string, a choice label); splits train 4,957, validation 500, test 500.
D^a/D^b from train, test from test (so test <= 500).

Prompt: the question stem with the choices lettered in their upstream order; label "<letter>.
<choice>"; gold the letter.
"""

from __future__ import annotations

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import Dropped
from w2s_ray.capabilities.hub.choice import ChoiceCapability, choice_example
from w2s_ray.capabilities.registry import register


class OpenBookQA(ChoiceCapability):
    name = "openbookqa"
    hub_id = "allenai/openbookqa"
    config = "main"
    card_rows = (4957, 500)

    def to_example(self, row: dict) -> Example | Dropped:
        labels, texts = list(row["choices"]["label"]), [t.strip() for t in row["choices"]["text"]]
        if row["answerKey"] not in labels:
            return Dropped(f"answer key not among the choice labels {labels}")
        return choice_example(row["question_stem"].strip(), texts, labels.index(row["answerKey"]))


register(OpenBookQA())
