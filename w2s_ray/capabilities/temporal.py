"""Temporal reasoning over a week (an MC-TACO-style temporal analogue with a word answer).

Pretraining writes clock arithmetic as terse records ("monday 1 4 + 3 5 h -> tuesday 0 1");
fine-tuning asks on which day an event that starts then and lasts that long ends.
"""

from __future__ import annotations

import random

from w2s_ray.capabilities.base import Capability, Example, digits, held_out
from w2s_ray.capabilities.registry import register

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _draw(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(7), rng.randrange(24), rng.randint(1, 71)


def _end(day: int, hour: int, duration: int) -> tuple[int, int]:
    total = day * 24 + hour + duration
    return (total // 24) % 7, total % 24


class Temporal(Capability):
    name = "temporal"
    max_new_tokens = 2

    def sample(self, rng: random.Random) -> Example:
        while True:
            day, hour, duration = _draw(rng)
            if held_out(f"{day}:{hour}+{duration}"):
                break
        end_day, _ = _end(day, hour, duration)
        prompt = (f"Q : an event starts on {DAYS[day]} at {digits(hour)} and lasts "
                  f"{digits(duration)} hours . on which day does it end ? A :")
        return Example(prompt, DAYS[end_day], DAYS[end_day])

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        lines = []
        while len(lines) < n:
            day, hour, duration = _draw(rng)
            if not held_out(f"{day}:{hour}+{duration}"):
                end_day, end_hour = _end(day, hour, duration)
                lines.append(f"{DAYS[day]} {digits(hour)} + {digits(duration)} h -> "
                             f"{DAYS[end_day]} {digits(end_hour)} .")
        return lines

    def extract(self, completion: str) -> str | None:
        words = completion.split()
        return words[0] if words and words[0] in DAYS else None

    def vocabulary(self) -> set[str]:
        return {*DAYS, *"0123456789", "Q", "A", ":", "an", "event", "starts", "on", "at", "and",
                "lasts", "hours", ".", "which", "day", "does", "it", "end", "?", "+", "h", "->"}


register(Temporal())
