"""Multi-step arithmetic word problems with a final numeric answer (a GSM8K analogue).

Pretraining writes the operations as bare equations ("3 7 + 4 5 = 8 2"); fine-tuning asks a
two-step word problem whose worked answer ends in GSM8K's "#### N".
"""

from __future__ import annotations

import random
import re

from w2s_ray.capabilities.base import Capability, Example, digits, held_out, parse_digits
from w2s_ray.capabilities.registry import register

NAMES = ("ann", "bob", "cara", "dan", "eve", "finn")
THINGS = ("apples", "coins", "books", "stones")


class Arithmetic(Capability):
    name = "arithmetic"
    max_new_tokens = 24

    def _operands(self, rng: random.Random) -> tuple[int, int, int]:
        a, b = rng.randint(10, 59), rng.randint(10, 39)
        c = rng.randint(1, a + b - 1)
        return a, b, c

    def sample(self, rng: random.Random) -> Example:
        while True:
            a, b, c = self._operands(rng)
            if held_out(f"{a}+{b}") and held_out(f"{a + b}-{c}"):
                break
        who, what = rng.choice(NAMES), rng.choice(THINGS)
        prompt = (f"Q : {who} has {digits(a)} {what} , gets {digits(b)} more and gives away "
                  f"{digits(c)} . how many {what} now ? A :")
        s, r = a + b, a + b - c
        label = f"{digits(a)} + {digits(b)} = {digits(s)} , {digits(s)} - {digits(c)} = {digits(r)} #### {digits(r)}"
        return Example(prompt, label, str(r))

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        lines = []
        while len(lines) < n:
            a, b, c = self._operands(rng)
            if rng.random() < 0.5:
                if not held_out(f"{a}+{b}"):
                    lines.append(f"{digits(a)} + {digits(b)} = {digits(a + b)} .")
            elif not held_out(f"{a + b}-{c}"):
                lines.append(f"{digits(a + b)} - {digits(c)} = {digits(a + b - c)} .")
        return lines

    def extract(self, completion: str) -> str | None:
        words = completion.split()
        if "####" in words:
            return parse_digits(words[words.index("####") + 1 :])
        runs = re.findall(r"(?:\b\d\b ?)+", completion)
        return parse_digits(runs[-1].split()) if runs else None

    def vocabulary(self) -> set[str]:
        return {*NAMES, *THINGS, *"0123456789", "Q", "A", ":", "has", ",", "gets", "more", "and",
                "gives", "away", ".", "how", "many", "now", "?", "+", "-", "=", "####"}


register(Arithmetic())
