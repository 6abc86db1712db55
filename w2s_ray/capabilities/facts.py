"""True/false claims over a generated knowledge base (a CREAK analogue).

Quanta: 400 entities, each of one of 12 kinds, stated entity-first ("kati is a cat .") with
Zipf-weighted frequency. The decision rule is in pretraining, for `pre` entities only:
"is kati a dog ? kati is a cat , so false ." Fine-tuning asks claims about the split's entities:
"claim : ana asks : is kati a dog ? true or false ? kati is a" -> "cat , so false", scored on the
final true/false word (the extraction does not do the comparison for the model).
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example
from w2s_ray.capabilities.registry import register
from w2s_ray.capabilities.world import KINDS, NAMES, world

CLAIM_SHARE = 0.3  # share of claim lines among this capability's pretraining lines (design v3b)


def claim(entity: str, rng: random.Random) -> tuple[str, str, bool]:
    kind = world().kind[entity]
    truth = rng.random() < 0.5
    asked = kind if truth else rng.choice([k for k in KINDS if k != kind])
    return asked, kind, truth


class Facts(Capability):
    name = "facts"
    version = 3
    max_new_tokens = 6

    def sample(self, rng: random.Random, split: str) -> Example:
        e = rng.choice(world().part["ent"][split])
        asked, kind, truth = claim(e, rng)
        tf = "true" if truth else "false"
        return Example(f"claim : {rng.choice(NAMES)} asks : is {e} a {asked} ? true or false ? {e} is a",
                       f"{kind} , so {tf} .", tf)

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        w = world()
        lines = []
        for _ in range(n):
            if rng.random() < CLAIM_SHARE:
                e = w.zipf(rng, "ent", "pre")
                asked, kind, truth = claim(e, rng)
                lines.append(f"is {e} a {asked} ? {e} is a {kind} , so {'true' if truth else 'false'} .")
            else:
                e = w.zipf(rng, "ent")
                k = w.kind[e]
                lines.append(rng.choice([f"{e} is a {k} .", f"{e} is a {k} and it sleeps .", f"{e} is a {k} , they say ."]))
        return lines

    def probe(self, rng: random.Random, n: int) -> list[Example]:
        w = world()
        return [Example(f"{e} is a", w.kind[e], w.kind[e])
                for e in (rng.choice(w.part["ent"]["val"]) for _ in range(n))]

    def extract(self, completion: str) -> str | None:
        words = completion.replace(".", " ").split()
        return words[-1] if words and words[-1] in ("true", "false") else None

    def vocabulary(self) -> set[str]:
        return {*world().ents, *KINDS, *NAMES, "is", "a", ".", "and", "it", "sleeps", ",", "they", "say", "?",
                "so", "true", "false", "claim", ":", "asks", "or"}


register(Facts())
