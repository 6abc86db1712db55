"""Contrastive pairs of weak-to-strong reasoning's stage II (Yang, Ma, Liu 2024): from k sampled
answers of the stage-I model and the weak model's answer, per item:

- the majority answer's share of the k samples below `min_majority` (0.6): no pair;
- the weak answer is the majority's: chosen = the weak model's output, rejected = a random
  sample whose answer is not the majority's (no pair when every sample agrees);
- otherwise, the majority's share at `confident_majority` (0.8) or above: chosen = a random
  sample with the majority answer, rejected = the weak model's output;
- otherwise no pair.

Answers are the capability's extracted answers; an unparseable sample (None) is never the
majority and counts as a minority answer; an item whose weak answer is unparseable gets no pair.
The random picks draw from a `random.Random` seeded by (seed, uid), the same in every process.
"""

from __future__ import annotations

import random
from collections import Counter

import pandas as pd

COLUMNS = ["uid", "capability", "prompt", "chosen", "rejected", "rule", "majority_share"]


def pair_of(samples: pd.DataFrame, weak_text: str, weak_answer, min_majority: float, confident: float,
            rng: random.Random) -> tuple[str, str, str, float] | None:
    """(chosen, rejected, rule, majority share) for one item's samples, or None."""
    answers = list(samples["answer"])
    counts = Counter(a for a in answers if a is not None)
    if not counts or weak_answer is None:
        return None
    majority, n = max(counts.items(), key=lambda kv: (kv[1], -answers.index(kv[0])))
    share = n / len(answers)
    if share < min_majority:
        return None
    texts = list(samples["label_text"])
    if weak_answer == majority:
        minority = [t for t, a in zip(texts, answers) if a != majority]
        return (weak_text, rng.choice(minority), "weak_is_majority", share) if minority else None
    if share >= confident:
        agreeing = [t for t, a in zip(texts, answers) if a == majority]
        return rng.choice(agreeing), weak_text, "confident_majority", share
    return None


def contrastive_pairs(samples: pd.DataFrame, weak: pd.DataFrame, min_majority: float, confident: float,
                      seed: int) -> pd.DataFrame:
    """One pair per item that the rules above keep, from `samples` (k rows per uid) and `weak`
    (the weak model's output `label_text` and `answer` per uid)."""
    rows = []
    by_uid = {uid: g.sort_values("sample") for uid, g in samples.groupby("uid", sort=True)}
    for uid, cap, prompt, text, answer in zip(weak["uid"], weak["capability"], weak["prompt"],
                                              weak["label_text"], weak["answer"]):
        if uid not in by_uid:
            continue
        made = pair_of(by_uid[uid], text, answer, min_majority, confident, random.Random(f"pairs:{seed}:{uid}"))
        if made is not None:
            rows.append((uid, cap, prompt, *made))
    return pd.DataFrame(rows, columns=COLUMNS)
