"""Event-duration questions (an MC-TACO-style temporal analogue with a generative answer).

Quanta: 300 events, each with a typical duration unit (7 units), stated entity-first in three
templates with Zipf-weighted frequency, a tenth of them restated in the answer form
("the kofel lasts seconds ."). Fine-tuning asks about the split's own events:
"question : ana went to a kofel . how long does a kofel last ? answer : the kofel lasts" -> "seconds".
(A yes/no "is N UNIT plausible ?" form collapsed to a constant answer in round 1, so the unit is the
answer; until round 4 the prompt ended in the main template's cue, "a kofel lasts a few", which
the untrained models already completed as well as any fine-tuned one.)
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example
from w2s_ray.capabilities.registry import register
from w2s_ray.capabilities.world import NAMES, UNITS, fact_line, restated, world


class Temporal(Capability):
    name = "temporal"
    version = 4
    max_new_tokens = 3
    stop = " ."  # extraction reads only the first word
    chance = 1 / len(UNITS)

    def sample(self, rng: random.Random, split: str) -> Example:
        w = world()
        e = rng.choice(w.part["ev"][split])
        return Example(f"question : {rng.choice(NAMES)} went to a {e} . how long does a {e} last ? answer : "
                       f"the {e} lasts", w.unit[e] + " .", w.unit[e])

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        w = world()
        lines = []
        for _ in range(n):
            e = w.zipf(rng, "ev")
            u = w.unit[e]
            lines.append(rng.choice([f"a {e} lasts a few {u} .", f"the {e} took some {u} .", f"each {e} takes {u} ."]))
        return restated(rng, lines, fact_line("ev", "unit", "the {item} lasts {value} ."))

    def probe(self, rng: random.Random, n: int) -> list[Example]:
        w = world()
        return [Example(f"a {e} lasts a few", w.unit[e], w.unit[e])
                for e in (rng.choice(w.part["ev"]["val"]) for _ in range(n))]

    def extract(self, completion: str) -> str | None:
        words = completion.split()
        return words[0] if words and words[0] in UNITS else None

    def vocabulary(self) -> set[str]:
        return {*world().evs, *UNITS, *NAMES, "a", "lasts", "few", ".", "the", "took", "some", "each", "takes",
                "question", ":", "went", "to", "how", "long", "does", "last", "?", "answer"}


register(Temporal())
