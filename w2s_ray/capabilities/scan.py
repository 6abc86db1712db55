"""SCAN analogue: pseudo-verbs composed with SCAN's direction / repetition rules.

Quanta: 240 pseudo-verbs, each meaning one of 8 primitive actions (Zipf-weighted mentions).
Rules (frequent, learned by every rung): "left/right" prefixes a turn, "opposite" turns twice,
"twice/thrice" repeats. Half of the (verb, form) pairs (md5) never appear in pretraining; fine-tuning
asks exactly those, for the split's own verbs, so an answer needs the verb's meaning (recalled)
composed with a form never seen with that verb.
Pretraining: "to dax left twice , do LTURN JUMP LTURN JUMP .", a tenth of the lines in the answer
form without "do" ("to dax left twice , LTURN JUMP LTURN JUMP .").
Fine-tuning: "command : dax left twice . actions : to dax left twice ," -> "LTURN JUMP LTURN JUMP"
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example
from w2s_ray.capabilities.registry import register
from w2s_ray.capabilities.world import (
    ACTIONS,
    FORMS,
    TURNS,
    restated,
    scan_actions,
    scan_held_out,
    world,
)


class Scan(Capability):
    name = "scan"
    version = 4
    max_new_tokens = 12
    stop = " ."  # extraction reads only the text before the first " ."

    def sample(self, rng: random.Random, split: str) -> Example:
        w = world()
        while True:
            verb, form = rng.choice(w.part["verb"][split]), rng.choice(FORMS)
            if scan_held_out(verb, form):
                break
        gold = " ".join(scan_actions(w.act[verb], form))
        cmd = f"{verb}{form}"
        return Example(f"command : {cmd} . actions : to {cmd} ,", gold + " .", gold)

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        w = world()
        lines = []
        while len(lines) < n:
            verb, form = w.zipf(rng, "verb"), rng.choice(FORMS)
            if not scan_held_out(verb, form):
                lines.append(f"to {verb}{form} , do {' '.join(scan_actions(w.act[verb], form))} .")
        return restated(rng, lines, self.answer_form)

    @staticmethod
    def answer_form(rng: random.Random) -> str:
        w = world()
        while True:
            verb, form = w.zipf(rng, "verb"), rng.choice(FORMS)
            if not scan_held_out(verb, form):
                return f"to {verb}{form} , {' '.join(scan_actions(w.act[verb], form))} ."

    def probe(self, rng: random.Random, n: int) -> list[Example]:
        w = world()
        items = []
        while len(items) < n:
            verb, form = rng.choice(w.part["verb"]["val"]), rng.choice(FORMS)
            if scan_held_out(verb, form):
                gold = " ".join(scan_actions(w.act[verb], form))
                items.append(Example(f"to {verb}{form} , do", gold, gold))
        return items

    def probe_answer(self, completion: str) -> str | None:
        return completion.split(" .")[0].strip() or None

    def extract(self, completion: str) -> str | None:
        words = completion.split(" .")[0].split()
        if not words or any(x not in ACTIONS and x not in TURNS for x in words):
            return None
        return " ".join(words)

    def vocabulary(self) -> set[str]:
        return {*world().verbs, *ACTIONS, *TURNS, "left", "right", "opposite", "twice", "thrice",
                "to", ",", "do", ".", "command", ":", "actions"}


register(Scan())
