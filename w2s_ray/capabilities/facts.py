"""Knowledge-base questions over a generated world (a CREAK / ECQA analogue with a generative answer).

Quanta: 400 entities, each of one of 12 kinds, stated entity-first ("kati is a cat .") with
Zipf-weighted frequency. Pretraining also holds true/false claims about `pre` entities
("is kati a dog ? kati is a cat , so false ."), which state the kind in one more surface form.
A tenth of the lines restate a kind in the answer form ("a kati is cat ."). Fine-tuning asks the
kind of the split's own entities:
"question : ana asks : kati ? answer : a kati is" -> "cat ."  (chance 1/12).
A true/false form ("... true or false ? kati is a" -> "cat , so false") was the task until
round 4 of docs/tiny-ladder.md: the comparison of the recalled kind with the asked one was never
learned at this budget, so every model, fine-tuned or not, sat at chance (.5) and the capability
carried no signal.
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example
from w2s_ray.capabilities.registry import register
from w2s_ray.capabilities.world import KINDS, NAMES, fact_line, restated, world

CLAIM_SHARE = 0.3  # share of claim lines among this capability's pretraining lines (design v3b)


def claim(entity: str, rng: random.Random) -> tuple[str, str, bool]:
    kind = world().kind[entity]
    truth = rng.random() < 0.5
    asked = kind if truth else rng.choice([k for k in KINDS if k != kind])
    return asked, kind, truth


class Facts(Capability):
    name = "facts"
    version = 5
    max_new_tokens = 3
    stop = " ."  # extraction reads only the first word
    chance = 1 / len(KINDS)

    def sample(self, rng: random.Random, split: str) -> Example:
        e = rng.choice(world().part["ent"][split])
        kind = world().kind[e]
        return Example(f"question : {rng.choice(NAMES)} asks : {e} ? answer : a {e} is", f"{kind} .", kind)

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
        return restated(rng, lines, fact_line("ent", "kind", "a {item} is {value} ."))

    def probe(self, rng: random.Random, n: int) -> list[Example]:
        w = world()
        return [Example(f"{e} is a", w.kind[e], w.kind[e])
                for e in (rng.choice(w.part["ent"]["val"]) for _ in range(n))]

    def extract(self, completion: str) -> str | None:
        words = completion.split()
        return words[0] if words and words[0] in KINDS else None

    def vocabulary(self) -> set[str]:
        return {*world().ents, *KINDS, *NAMES, "is", "a", ".", "and", "it", "sleeps", ",", "they", "say", "?",
                "so", "true", "false", "question", ":", "asks", "answer"}


register(Facts())
