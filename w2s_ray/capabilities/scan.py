"""SCAN (Lake & Baroni 2018) generated from its published grammar.

Pretraining states command/action pairs in lower-case words ("jump twice gives jump jump");
fine-tuning asks in SCAN's own form ("IN : jump twice OUT :" -> "I_JUMP I_JUMP"), so the
mapping of the grammar is latent knowledge that fine-tuning has to elicit.
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example, held_out
from w2s_ray.capabilities.registry import register

VERBS = ("walk", "look", "run", "jump")
DIRECTIONS = ("left", "right")
ACTIONS = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP",
           "left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}


def _verb_phrase(rng: random.Random) -> list[str]:
    verb = rng.choice(VERBS + ("turn",))
    form = rng.choice(("plain", "dir", "opposite", "around")) if verb == "turn" else rng.choice(
        ("plain", "plain", "dir", "opposite", "around"))
    if verb == "turn" and form == "plain":
        form = "dir"
    direction = rng.choice(DIRECTIONS)
    return {"plain": [verb], "dir": [verb, direction],
            "opposite": [verb, "opposite", direction], "around": [verb, "around", direction]}[form]


def _phrase(rng: random.Random) -> list[str]:
    words = _verb_phrase(rng)
    repeat = rng.choice(("", "", "twice", "thrice"))
    return words + [repeat] if repeat else words


def interpret(command: list[str]) -> list[str]:
    """SCAN's semantics, returning primitive action names (walk, left, ...)."""
    if "and" in command:
        i = command.index("and")
        return interpret(command[:i]) + interpret(command[i + 1 :])
    if "after" in command:
        i = command.index("after")
        return interpret(command[i + 1 :]) + interpret(command[:i])
    if command[-1] in ("twice", "thrice"):
        return interpret(command[:-1]) * (2 if command[-1] == "twice" else 3)
    verb, rest = command[0], command[1:]
    act = [] if verb == "turn" else [verb]
    if not rest:
        return act
    if rest[0] == "opposite":
        return [rest[1], rest[1]] + act
    if rest[0] == "around":
        return ([rest[1]] + act) * 4
    return [rest[0]] + act


class Scan(Capability):
    name = "scan"
    max_new_tokens = 26
    max_actions = 24

    def _command(self, rng: random.Random) -> tuple[list[str], list[str]]:
        while True:
            cmd = _phrase(rng)
            if rng.random() < 0.5:
                cmd = cmd + [rng.choice(("and", "after"))] + _phrase(rng)
            acts = interpret(cmd)
            if len(acts) <= self.max_actions:
                return cmd, acts

    def sample(self, rng: random.Random) -> Example:
        while True:
            cmd, acts = self._command(rng)
            if held_out(" ".join(cmd)):
                gold = " ".join(ACTIONS[a] for a in acts)
                return Example(f"IN : {' '.join(cmd)} OUT :", gold, gold)

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        lines = []
        while len(lines) < n:
            cmd, acts = self._command(rng)
            if not held_out(" ".join(cmd)):
                lines.append(f"{' '.join(cmd)} gives {' '.join(acts)} .")
        return lines

    def extract(self, completion: str) -> str | None:
        words = completion.split()
        if not words or any(w not in ACTIONS.values() for w in words):
            return None
        return " ".join(words)

    def vocabulary(self) -> set[str]:
        return {*VERBS, *DIRECTIONS, *ACTIONS.values(), "turn", "opposite", "around", "twice",
                "thrice", "and", "after", "IN", "OUT", ":", "gives", "."}


register(Scan())
