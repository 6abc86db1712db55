"""The shared synthetic world behind the four tiny-ladder capabilities (round-2 design v3).

Every capability's latent knowledge is a Zipf-weighted (exponent 1.0) set of atomic facts about
pseudo-words, stated entity-first in pretraining; fine-tuning items *compose* those facts with
frequent rules. Items are partitioned across splits by index, interleaved over Zipf rank, so every
split has the same frequency profile and no split's answer is a training label of another split:

    partition of item i (4 groups):  i % 4 -> (labeled, unlabeled, test, val)
    partition of item i (5 groups):  i % 5 -> (labeled, unlabeled, test, val, pre)

"pre" items (KB entities, goods) appear in the pretraining-only claim / word-problem documents.
The world is a pure function of WORLD_SEED: same words, same facts, every process.
"""

from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from functools import cache

WORLD_SEED = 0
ZIPF = 1.0
SPLITS = ("labeled", "unlabeled", "test", "val")
ACTIONS = ("WALK", "RUN", "JUMP", "LOOK", "SWIM", "FLY", "SIT", "CRAWL")
TURNS = ("LTURN", "RTURN")
FORMS = tuple(m + r for m in ("", " left", " right", " opposite left", " opposite right")
              for r in ("", " twice", " thrice"))
KINDS = ("dog", "cat", "bird", "fish", "frog", "horse", "snake", "bee", "cow", "owl", "bat", "duck")
UNITS = ("seconds", "minutes", "hours", "days", "weeks", "months", "years")
NAMES = ("ana", "ben", "cara", "dan", "eva", "finn", "gus", "hana")
PRICES = (1, 2, 3, 4, 5, 6)
COUNTS = ("two", "three")
SIZES = {"verb": 240, "good": 400, "ent": 400, "ev": 300}
GROUPS = {"verb": 4, "good": 5, "ent": 5, "ev": 4}


def md5_mod(text: str, mod: int) -> int:
    return int(hashlib.md5(text.encode()).hexdigest(), 16) % mod


def num(n: int) -> str:
    return " ".join(str(n))


def _pseudo_words(n, rng, used):
    cons, vow = "bdfgklmnprstvz", "aeiou"
    out = []
    while len(out) < n:
        w = rng.choice(cons) + rng.choice(vow) + rng.choice(cons) + rng.choice(vow) + rng.choice(["", "n", "r", "l"])
        if w not in used:
            used.add(w)
            out.append(w)
    return out


class World:
    def __init__(self, seed: int = WORLD_SEED):
        rng = random.Random(seed)
        used: set[str] = set()
        self.verbs = _pseudo_words(SIZES["verb"], rng, used)
        self.goods = _pseudo_words(SIZES["good"], rng, used)
        self.ents = _pseudo_words(SIZES["ent"], rng, used)
        self.evs = _pseudo_words(SIZES["ev"], rng, used)
        self.act = {v: ACTIONS[i % len(ACTIONS)] for i, v in enumerate(rng.sample(self.verbs, len(self.verbs)))}
        self.price = {g: rng.choice(PRICES) for g in self.goods}
        self.kind = {e: rng.choice(KINDS) for e in self.ents}
        self.unit = {e: rng.choice(UNITS) for e in self.evs}
        self.items = {"verb": self.verbs, "good": self.goods, "ent": self.ents, "ev": self.evs}
        self.known_rank = {x: md5_mod(f"known|{x}", 1000) for items in self.items.values() for x in items}
        self.weights = {k: [1.0 / (i + 1) ** ZIPF for i in range(len(v))] for k, v in self.items.items()}
        self.part: dict[str, dict[str, list[str]]] = {}
        self.part_w: dict[str, dict[str, list[float]]] = {}
        for key, items in self.items.items():
            names = SPLITS + (("pre",) if GROUPS[key] == 5 else ())
            self.part[key] = {s: [x for i, x in enumerate(items) if i % GROUPS[key] == j] for j, s in enumerate(names)}
            self.part_w[key] = {s: [w for i, w in enumerate(self.weights[key]) if i % GROUPS[key] == j]
                                for j, s in enumerate(names)}

    def zipf(self, rng: random.Random, key: str, split: str | None = None) -> str:
        while True:
            if split is None:
                x = rng.choices(self.items[key], self.weights[key])[0]
            else:
                x = rng.choices(self.part[key][split], self.part_w[key][split])[0]
            if self.known_rank[x] < _known_share * 1000:
                return x


_known_share = 1.0


@contextmanager
def knowing(share: float):
    """Pretraining text written inside states the facts of only `share` of every capability's items.

    The items are the same for every writer (md5 of the item), so a rung pretrained knowing .35 knows
    a subset of what a rung knowing .55 knows. Which rung knows what is then set by its corpus, not by
    when in training a capability's knowledge happens to arrive, which moved with the pretraining seed
    by as much as the gap between rungs (rounds 6-7 of docs/tiny-ladder.md).
    """
    global _known_share
    before, _known_share = _known_share, share
    try:
        yield
    finally:
        _known_share = before


@cache
def world() -> World:
    return World()


#: share of scan's, facts' and temporal's knowledge lines restated in the fine-tuning answer form
#: ("the kofel lasts days ."): the untrained models hold that form weakly, so the form needs
#: eliciting but is not learned from the labels alone (round 4 of docs/tiny-ladder.md: without it
#: students copied their weak labels, with the pretraining cue they needed no fine-tuning)
ANSWER_FORM_SHARE = 0.1


def restated(rng: random.Random, lines: list[str], line) -> list[str]:
    """`lines` with each replaced, at ANSWER_FORM_SHARE, by a fresh `line(rng)` in the answer form."""
    return [line(rng) if rng.random() < ANSWER_FORM_SHARE else x for x in lines]


def fact_line(key: str, attribute: str, template: str):
    """A line-maker for `restated`: one Zipf-drawn item of `key` and its `attribute` in `template`."""
    def line(rng: random.Random) -> str:
        w = world()
        item = w.zipf(rng, key)
        return template.format(item=item, value=getattr(w, attribute)[item])
    return line


def scan_actions(action: str, form: str) -> list[str]:
    words = form.split()
    rep = 1
    if words and words[-1] in ("twice", "thrice"):
        rep = 2 if words[-1] == "twice" else 3
        words = words[:-1]
    if not words:
        one = [action]
    else:
        turn = "LTURN" if words[-1] == "left" else "RTURN"
        one = [turn, turn, action] if words[0] == "opposite" else [turn, action]
    return one * rep


def scan_held_out(verb: str, form: str) -> bool:
    """(verb, form) pairs that pretraining never writes: the SCAN fine-tuning item space."""
    return md5_mod(f"{verb}|{form}", 2) == 0


BRIDGE_WORDS = {"a", "claim", "can", "be", "true", "or", "false", ".", "we", "check", "the", "and", "say", *NAMES,
                "says", "it", "is", "went", "to", "market", "command", "gives", "actions", "read", "do", "question",
                "has", "an", "answer", "give", "problem", "solve", "how", "long", "does", "last", "?", "asks",
                ":", "many", "coins"}


def bridge_lines(rng: random.Random, n: int) -> list[str]:
    """Prose that uses the fine-tuning prompts' header words (5% of the corpus)."""
    out = []
    for _ in range(n):
        name = rng.choice(NAMES)
        out.append(rng.choice([
            "a claim can be true or false . we check the claim and say true or false .",
            f"{name} says it is true . {name} went to a market .",
            "a command gives actions . we read the command and do the actions .",
            "a question has an answer . we read the question and give the answer .",
            "a problem has an answer . we solve the problem .",
            f"how long does it last ? {name} asks a question .",
            f"{name} has a problem : how many coins ? {name} gives the answer .",
        ]))
    return out
