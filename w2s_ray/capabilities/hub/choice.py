"""Multiple choice with lettered options (SciQ, OpenBookQA, ECQA): prompt, label, extraction.

Prompt: "Question: ...\\nA. ...\\nB. ...\\nAnswer:"; label "B. <option text>"; gold "B".
An output is read, its markdown emphasis ("**B**") set aside, as, in order: a leading letter
("B", "B.", "(B)", "B) ...", "Answer: B", "Option B"); a stated one ("the answer is B", "The
correct option is (B).", "Answer: B" after some reasoning); else the one option whose text it
contains (more than one, or none: unparseable).
"""

from __future__ import annotations

import hashlib
import random
import re

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import HubCapability, example

LETTERS = "ABCDE"
LEADING = re.compile(r"^\s*(?:(?i:answer|option|choice)\s*:?\s*)?\(?([A-E])(?:[.):]|\s*$|\s*\n)")
STATED = re.compile(r"(?i:answer|(?:correct|right|best) (?:option|choice))(?: is)?:?\s*\(?([A-E])\)?(?:[.,:;)!]|\s|$)")
OPTION = re.compile(r"^([A-E])\. (.*)$", re.MULTILINE)


def shuffled(key: str, options: list[str]) -> list[str]:
    """Options in an order fixed by the question itself (md5), the same in every run and seed."""
    order = list(options)
    random.Random(hashlib.md5(key.encode()).hexdigest()).shuffle(order)
    return order


def choice_example(question: str, options: list[str], answer: int) -> Example:
    letter = LETTERS[answer]
    lines = [f"Question: {question}", *(f"{L}. {o}" for L, o in zip(LETTERS, options)), "Answer:"]
    return example("\n".join(lines), f"{letter}. {options[answer]}", letter)


class ChoiceCapability(HubCapability):
    max_new_tokens = 32
    stop = "\nQuestion:"

    def extract(self, completion: str) -> str | None:
        text = completion.replace("*", "")
        for pattern in (LEADING, STATED):
            if m := pattern.search(text):
                return m.group(1)
        return None

    def extract_answer(self, prompt: str, completion: str) -> str | None:
        options = dict(OPTION.findall(prompt))
        letter = self.extract(completion)
        if letter is not None:
            return letter if letter in options else None
        text = completion.lower()
        named = [k for k, v in options.items() if v.strip() and v.strip().lower() in text]
        return named[0] if len(named) == 1 else None
