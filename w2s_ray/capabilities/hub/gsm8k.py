"""GSM8K (Cobbe et al. 2021): grade-school maths word problems with worked solutions.

Confirmed (2026-11-22) on the dataset card https://huggingface.co/datasets/openai/gsm8k
(README `configs:` and `dataset_info:`): id `openai/gsm8k` (the old id `gsm8k` redirects), config
`main` (also `socratic`), Parquet `main/train-*`, `main/test-*`; features `question` (string),
`answer` (string: the worked solution with calculator annotations `<<48/2=24>>`, ending in
`#### <final answer>`); splits train 7,473, test 1,319. D^a/D^b come from train, test from test.

Prompt "Question: <question>\\nAnswer:"; label the worked solution without the calculator
annotations, ending "#### <number>"; gold the number. An output's answer (before any new
"Question:" it runs on into) is the first number after its first "####" (as models write it:
"#### 520", "#### $ 520", "#### **520**", "#### The answer is 520."), else the number it states
as the answer ("The answer is $520.", "\\boxed{520}"), else the last number it states;
numbers are compared without "$", "," or a trailing ".0".
"""

from __future__ import annotations

import re

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import Dropped, HubCapability, example
from w2s_ray.capabilities.registry import register

ANNOTATION = re.compile(r"<<[^>]*>>")
FINAL = re.compile(r"####\s*(\S+)")
NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
STATED = re.compile(r"(?:answer is|answer:|boxed\{)[\s:$*]*(-?\$?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def number(text: str) -> str | None:
    """A number in canonical form: "1,000" -> "1000", "$5" -> "5", "7.50" -> "7.5", "3.0" -> "3"."""
    text = text.replace("$", "").replace(",", "").rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else f"{value:g}"


class GSM8K(HubCapability):
    name = "gsm8k"
    hub_id = "openai/gsm8k"
    config = "main"
    card_rows = (7473, 1319)
    max_new_tokens = 256
    stop = "\nQuestion:"

    def to_example(self, row: dict) -> Example | Dropped:
        gold = FINAL.search(row["answer"])
        if gold is None or number(gold.group(1)) is None:
            return Dropped("no number after '####'")
        solution = ANNOTATION.sub("", row["answer"]).strip()
        return example(f"Question: {row['question'].strip()}\nAnswer:", solution, number(gold.group(1)))

    def extract(self, completion: str) -> str | None:
        text = completion.split("Question:")[0]
        before, final, after = text.partition("####")
        if final and (m := NUMBER.search(after)):
            return number(m.group(0))
        if m := STATED.search(before):
            return number(m.group(1))
        found = NUMBER.findall(before)
        return number(found[-1]) if found else None


register(GSM8K())
