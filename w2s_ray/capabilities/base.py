"""What a capability is: a generator (or loader), a prompt format, answer extraction, scoring."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

#: the engine's splits: D^a (labeled), D^b (unlabeled: weak-labeled), test
SPLITS = ("labeled", "unlabeled", "test")


@dataclass(frozen=True)
class Example:
    prompt: str
    label_text: str
    gold: str
    #: items sharing a group (one MC-TACO question with its candidate answers) are never carved
    #: into two splits; None = the item is its own group
    group: str | None = None


class Capability(ABC):
    name: str
    #: bump when the generator, prompt or extraction changes: it is part of every artifact key
    version: int = 1
    max_new_tokens: int = 16
    #: generation ends after this text (kept in the output) where the answer is complete by then,
    #: so the rest of the budget is not spent; "" = only EOS and max_new_tokens end it
    stop: str = ""
    #: an ICL shot is prompt + shot_joiner + label, and shots are joined by shot_separator: the
    #: synthetic word-level text is one stream of space-separated words
    shot_joiner: str = " "
    shot_separator: str = " "
    #: accuracy of a uniform guess over the answer space: a capability carries signal only where
    #: a model's accuracy clears it by a margin (the tiny ladder's top rung must)
    chance: float = 0.0

    def shot(self, prompt: str, label_text: str) -> str:
        return f"{prompt}{self.shot_joiner}{label_text}"

    @abstractmethod
    def sample(self, rng: random.Random, split: str) -> Example:
        """One random item of a split: labeled (D^a), unlabeled (D^b), test or val.

        A synthetic capability keeps the knowledge behind each split's answers apart (entities,
        events, verbs are partitioned), so no split's answer is another split's training label.
        """

    @abstractmethod
    def extract(self, completion: str) -> str | None:
        """The final answer in a model's output, or None when it cannot be parsed."""

    def extract_answer(self, prompt: str, completion: str) -> str | None:
        """The final answer given the prompt too (multiple choice reads its options there)."""
        return self.extract(completion)

    def score(self, answer: str | None, gold: str) -> bool:
        return answer is not None and answer == gold

    def pretrain_lines(self, rng: random.Random, n: int) -> list[str]:
        """Pretraining text carrying this capability's latent knowledge in another surface form."""
        raise NotImplementedError(f"{self.name} has no synthetic pretraining corpus")

    def probe(self, rng: random.Random, n: int) -> list[Example]:
        """Knowledge probe items in the *pretraining* form, from the val partition: does a base
        checkpoint hold the knowledge at all, before any fine-tuning?"""
        raise NotImplementedError(f"{self.name} has no knowledge probe")

    def probe_answer(self, completion: str) -> str | None:
        """The probed knowledge in a completion; by default its first word."""
        words = completion.split()
        return words[0] if words else None

    def vocabulary(self) -> set[str]:
        """Every word its prompts, labels and pretraining text can use (for the tiny tokenizer)."""
        raise NotImplementedError(f"{self.name} is not a synthetic capability")

    def examples(self, rng: random.Random, n: int, split: str) -> list[Example]:
        """`n` items of a split with distinct prompts."""
        seen: dict[str, Example] = {}
        tries = 0
        while len(seen) < n:
            ex = self.sample(rng, split)
            seen.setdefault(ex.prompt, ex)
            tries += 1
            if tries > 50 * n + 1000:
                raise ValueError(f"{self.name}: the {split} split holds fewer than {n} distinct items")
        return list(seen.values())

    def splits(self, seed: int, sizes: dict[str, int], data_dir: str | None,
               evaluate_on: str = "test") -> dict[str, list[Example]]:
        """Every split at once, deterministic by seed. A generator draws each split on its own
        (its splits keep their knowledge apart); a loaded dataset carves them from its pool.
        With evaluate_on="validation" the "test" split is drawn from the generator's validation
        partition instead. str seeds are hashed with sha512 by `random`, so draws are the same in
        every process."""
        source = {"labeled": "labeled", "unlabeled": "unlabeled",
                  "test": "val" if evaluate_on == "validation" else "test"}
        return {split: self.examples(random.Random(f"{self.name}:{seed}:{source[split]}"), sizes[split],
                                     source[split]) for split in SPLITS}

    def validate(self, sizes: dict[str, int], data_dir: str | None, evaluate_on: str = "test") -> None:
        """Raise ValueError (sizes) or FileNotFoundError (data source), before any work, when
        these split sizes or this data source cannot be served. A generator serves any size."""

    def key_fields(self, data_dir: str | None) -> dict:
        """What, beyond name, seed and sizes, decides the splits' content (part of their key)."""
        return {}
