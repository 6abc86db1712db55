"""What a capability is: a generator (or loader), a prompt format, answer extraction, scoring."""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    prompt: str
    label_text: str
    gold: str


def held_out(item: str, fraction: int = 4) -> bool:
    """Whether an item belongs to the fine-tuning item space rather than the pretraining one.

    Pretraining text only uses items for which this is False, so every split (D^a, D^b, test)
    probes knowledge that must *generalise* from pretraining, never recall of a seen item.
    """
    return int(hashlib.sha1(item.encode()).hexdigest(), 16) % fraction == 0


class Capability(ABC):
    name: str
    #: bump when the generator, prompt or extraction changes: it is part of every artifact key
    version: int = 1
    max_new_tokens: int = 16

    @abstractmethod
    def sample(self, rng: random.Random) -> Example:
        """One random item from the held-out (fine-tuning) item space."""

    @abstractmethod
    def extract(self, completion: str) -> str | None:
        """The final answer in a model's output, or None when it cannot be parsed."""

    def score(self, answer: str | None, gold: str) -> bool:
        return answer is not None and answer == gold

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        """Pretraining text carrying this capability's latent knowledge in another surface form."""
        raise NotImplementedError(f"{self.name} has no synthetic pretraining corpus")

    def vocabulary(self) -> set[str]:
        """Every word its prompts, labels and pretraining text can use (for the tiny tokenizer)."""
        raise NotImplementedError(f"{self.name} is not a synthetic capability")

    def examples(self, rng: random.Random, n: int) -> list[Example]:
        """`n` items with distinct prompts, so splits drawn from them are disjoint."""
        seen: dict[str, Example] = {}
        tries = 0
        while len(seen) < n:
            ex = self.sample(rng)
            seen.setdefault(ex.prompt, ex)
            tries += 1
            if tries > 50 * n + 1000:
                raise ValueError(f"{self.name}: item space too small for {n} distinct items")
        return list(seen.values())


def digits(number: int) -> str:
    """Numbers are written digit by digit so the word-level vocabulary stays tiny."""
    return " ".join(str(number))


def parse_digits(words: list[str]) -> str | None:
    return "".join(words) if words and all(w.isdigit() and len(w) == 1 for w in words) else None
