"""SciQ (Welbl et al. 2017): science exam questions, one correct answer and three distractors.

Confirmed (2026-11-22) on the dataset card https://huggingface.co/datasets/allenai/sciq
(README `dataset_info:` and `configs:`): id `allenai/sciq` (the old id `sciq` redirects),
default config, Parquet `data/{train,validation,test}-*`; features `question`, `distractor3`,
`distractor1`, `distractor2`, `correct_answer`, `support` (strings); splits train 11,679,
validation 1,000, test 1,000. D^a/D^b from train, test from test.

Prompt: the question and the four options (correct answer and distractors) in an order fixed
by the question's md5, lettered A-D; label "<letter>. <option>"; gold the letter.
"""

from __future__ import annotations

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.choice import ChoiceCapability, choice_example, shuffled
from w2s_ray.capabilities.registry import register


class SciQ(ChoiceCapability):
    name = "sciq"
    hub_id = "allenai/sciq"
    card_rows = (11679, 1000)

    def to_example(self, row: dict) -> Example:
        correct = row["correct_answer"].strip()
        options = shuffled(row["question"], [correct, *(row[f"distractor{i}"].strip() for i in (1, 2, 3))])
        return choice_example(row["question"].strip(), options, options.index(correct))


register(SciQ())
