"""ECQA (Aggarwal et al. 2021): CommonsenseQA questions with five options (and explanations).

Confirmed (2026-11-22) on the dataset card https://huggingface.co/datasets/tasksource/ecqa
(README `dataset_info:`): id `tasksource/ecqa`, default config (Parquet); features `q_no`,
`q_concept`, `q_text`, `q_op1`..`q_op5`, `q_ans` (the answer's *text*), `taskA_pos`,
`taskA_neg`, `taskB` (free-flow explanation), all strings; splits train 7,598, validation
1,090, test 2,194. D^a/D^b from train, test from test.

Prompt: the question with its five options lettered A-E in the upstream order; label "<letter>.
<option>"; gold the letter. Rows whose answer text is not one of the options, or is more than
one of them (~0.5% of items repeat an option text; the schema has no answer index to tell which
letter is meant), are dropped and counted.
"""

from __future__ import annotations

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import Dropped
from w2s_ray.capabilities.hub.choice import ChoiceCapability, choice_example
from w2s_ray.capabilities.registry import register


class ECQA(ChoiceCapability):
    name = "ecqa"
    hub_id = "tasksource/ecqa"
    card_rows = (7598, 2194)

    def to_example(self, row: dict) -> Example | Dropped:
        options = [row[f"q_op{i}"].strip() for i in range(1, 6)]
        answer = row["q_ans"].strip()
        if answer not in options:
            return Dropped("answer text not among the options")
        if options.count(answer) > 1:
            # the schema keys the answer by its text only: which letter is gold is unknowable
            return Dropped("answer text is two options")
        return choice_example(row["q_text"].strip(), options, options.index(answer))


register(ECQA())
