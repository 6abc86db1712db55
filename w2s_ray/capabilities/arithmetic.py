"""Multi-step arithmetic word problems over recalled prices (a GSM8K analogue).

Quanta: 400 goods, each with a price 1..6 ("a lifil costs 3 coins ."), Zipf-weighted.
Composition: buying two or three of a good is answered in equation form with one or two
addition steps; the addition facts are frequent. Pretraining also holds worked problems, but only
about the `pre` goods, so every fine-tuning split's goods are answered from recalled prices.
Fine-tuning: "problem : ana buys three fabi . how many coins ? a fabi costs"
  -> "3 . 3 + 3 = 6 . 6 + 3 = 9 . answer 9"   (scored on the number after "answer").
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example
from w2s_ray.capabilities.registry import register
from w2s_ray.capabilities.world import COUNTS, NAMES, PRICES, num, world


def problem(name: str, good: str, count: str) -> tuple[str, str, str]:
    p = world().price[good]
    prompt = f"{name} buys {count} {good} . how many coins ? a {good} costs"
    if count == "two":
        return prompt, f"{p} . {p} + {p} = {num(2 * p)} . answer {num(2 * p)}", num(2 * p)
    return (prompt, f"{p} . {p} + {p} = {num(2 * p)} . {num(2 * p)} + {p} = {num(3 * p)} . answer {num(3 * p)}",
            num(3 * p))


class Arithmetic(Capability):
    name = "arithmetic"
    version = 3
    max_new_tokens = 22
    #: the distinct totals of two or three goods priced 1..6
    chance = 1 / len({c * p for c in (2, 3) for p in PRICES})

    def sample(self, rng: random.Random, split: str) -> Example:
        good = rng.choice(world().part["good"][split])
        prompt, label, gold = problem(rng.choice(NAMES), good, rng.choice(COUNTS))
        return Example("problem : " + prompt, label + " .", gold)

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        w = world()
        lines = []
        for _ in range(n):
            u = rng.random()
            if u < 0.45:
                g = w.zipf(rng, "good")
                lines.append(rng.choice([f"a {g} costs {w.price[g]} coins .",
                                         f"a {g} costs {w.price[g]} coins at the market ."]))
            elif u < 0.85:
                prompt, label, _ = problem(rng.choice(NAMES), w.zipf(rng, "good", "pre"), rng.choice(COUNTS))
                lines.append(f"{prompt} {label} .")
            else:
                a, b = rng.choice(PRICES + tuple(2 * p for p in PRICES)), rng.choice(PRICES)
                lines.append(f"{num(a)} + {b} = {num(a + b)} .")
        return lines

    def probe(self, rng: random.Random, n: int) -> list[Example]:
        items = []
        for _ in range(n):
            prompt, label, gold = problem(rng.choice(NAMES), rng.choice(world().part["good"]["val"]),
                                          rng.choice(COUNTS))
            items.append(Example(prompt, label, gold))
        return items

    def probe_answer(self, completion: str) -> str | None:
        return self.extract(completion)

    def extract(self, completion: str) -> str | None:
        if "answer" not in completion:
            return None
        words = completion.split("answer")[-1].split(".")[0].split()
        return " ".join(words) if words and all(x.isdigit() and len(x) == 1 for x in words) else None

    def vocabulary(self) -> set[str]:
        return {*world().goods, *NAMES, *COUNTS, *"0123456789", "buys", ".", "how", "many", "coins", "?",
                "a", "costs", "at", "the", "market", "+", "=", "answer", "problem", ":"}


register(Arithmetic())
