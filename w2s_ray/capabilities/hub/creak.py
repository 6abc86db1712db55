"""CREAK (Onoe et al. 2021): is a claim about an entity true or false?

Confirmed (2026-11-22) in the authors' repository yasumasaonoe/creak: README.md ("Data Files")
and the files themselves, `data/creak/train.json` (10,176 rows), `dev.json` (1,371),
`test_without_labels.json` (no labels), `contrast_set.json` (500); JSON lines with `ex_id`,
`sentence`, `explanation`, `label` ("true" / "false"), `entity`, `en_wiki_pageid`,
`entity_mention_loc`. CREAK is not on the hub as a dataset of its authors, so the loader reads
those files with `load_dataset("json", data_files=...)` from raw.githubusercontent.com (branch
`main`). The test labels are withheld: D^a/D^b come from train, test from dev (upstream split
name `validation` here, and in the mirror: `creak/validation.jsonl`).

Prompt "Claim: <sentence>\\nIs the claim true or false?\\nAnswer:"; label and gold "true" / "false".
"""

from __future__ import annotations

from typing import ClassVar

from w2s_ray.capabilities.base import Example
from w2s_ray.capabilities.hub.base import Dropped, HubCapability, example, label_word
from w2s_ray.capabilities.registry import register

RAW = "https://raw.githubusercontent.com/yasumasaonoe/creak/main/data/creak"
WORDS = ("true", "false")


class Creak(HubCapability):
    name = "creak"
    hub_id = "yasumasaonoe/creak"
    hub_files: ClassVar[dict[str, str]] = {"train": f"{RAW}/train.json", "validation": f"{RAW}/dev.json"}
    mirror_format = "json"
    test_split = "validation"
    card_rows = (10176, 1371)
    max_new_tokens = 4
    stop = "\nClaim:"

    def to_example(self, row: dict) -> Example | Dropped:
        label = str(row["label"]).lower()
        if label not in WORDS:
            return Dropped(f"label {row['label']!r} not in {WORDS}")
        return example(f"Claim: {row['sentence'].strip()}\nIs the claim true or false?\nAnswer:", label, label)

    def extract(self, completion: str) -> str | None:
        return label_word(completion, WORDS)


register(Creak())
