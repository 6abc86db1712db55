"""True/false claims over a generated knowledge base (a CREAK analogue).

Pretraining states where each person lives and which country each city is in, and, for
people outside the fine-tuning item space, which country they are from. Claims ask the
composed fact (person -> city -> country) for held-out people, so a model must apply the rule.
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example, held_out
from w2s_ray.capabilities.registry import register

WORLD_SEED = 20250101
COUNTRIES = {"norland": ("brest", "corin", "dalby"), "sudia": ("elmo", "farro", "gant"),
             "ostmark": ("hollin", "ivra", "jask"), "westry": ("kell", "lumo", "marra")}
SYLLABLES = ("ka", "lo", "mi", "ra", "te", "zu", "no", "vi")


def _world() -> dict[str, str]:
    rng = random.Random(WORLD_SEED)
    cities = [c for cs in COUNTRIES.values() for c in cs]
    people = sorted({a + b + c + d for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES
                     for d in SYLLABLES[:3]})
    return {p: rng.choice(cities) for p in people}


CITY_COUNTRY = {c: k for k, cs in COUNTRIES.items() for c in cs}
HOME = _world()


class Facts(Capability):
    name = "facts"
    max_new_tokens = 2

    def sample(self, rng: random.Random) -> Example:
        while True:
            person = rng.choice(sorted(HOME))
            if held_out(person):
                break
        truth = CITY_COUNTRY[HOME[person]]
        truthful = rng.random() < 0.5
        country = truth if truthful else rng.choice(sorted(set(COUNTRIES) - {truth}))
        gold = "true" if truthful else "false"
        return Example(f"claim : {person} is from {country} . true or false ? A :", gold, gold)

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        people = sorted(HOME)
        lines = []
        while len(lines) < n:
            person = rng.choice(people)
            kind = rng.random()
            if kind < 0.5:
                lines.append(f"{person} lives in {HOME[person]} .")
            elif kind < 0.7:
                city = rng.choice(sorted(CITY_COUNTRY))
                lines.append(f"{city} is in {CITY_COUNTRY[city]} .")
            elif not held_out(person):
                lines.append(f"{person} is from {CITY_COUNTRY[HOME[person]]} .")
        return lines

    def extract(self, completion: str) -> str | None:
        words = completion.split()
        return words[0] if words and words[0] in ("true", "false") else None

    def vocabulary(self) -> set[str]:
        return {*HOME, *CITY_COUNTRY, *COUNTRIES, "claim", ":", "is", "from", ".", "true", "or",
                "false", "?", "A", "lives", "in"}


register(Facts())
