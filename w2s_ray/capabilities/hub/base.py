"""Capabilities loaded from a published dataset: the shared loader and the split carving.

A dataset module names its upstream source and says how one upstream row becomes an Example;
the rest is here.

- Source. Without a mirror, `datasets.load_dataset` reads the hub: the repository id and config
  for datasets published as Parquet; for datasets published as loading scripts (which `datasets`
  >= 4 refuses to run) the hub's own Parquet conversion, `revision="refs/convert/parquet"` with
  `data_dir=<config>` (folders `<config>/<split>/0000.parquet`); for datasets published as
  files, `load_dataset("json", data_files=<urls>)`. With a mirror (`data_dir`, written by
  `python -m w2s_ray.data_mirror`), the same `load_dataset` reads local files of the same schema:
  `<data_dir>/<capability>/<upstream split>.parquet` (`.jsonl` for datasets published as JSON
  lines).
- Class labels. Label columns reach the modules as their names (-1, "no label", as None): from
  the ClassLabel metadata where the files carry it, else, for plain integers (a mirror written by
  pandas or another tool), from the names the module declares in `label_names`.
- Dropped rows. A row without a usable label, a repeated prompt, or a training row whose
  question is also in the test split is left out; every load logs how many and why
  (`Pools.dropped`), and a size error quotes those counts.
- Carving (Burns et al. 2023). D^a and D^b are disjoint random draws from the upstream training
  pool, test from the upstream evaluation split; prompts are de-duplicated within and across the
  two pools, so no two splits share a prompt. Items of one group (`Example.group`: an MC-TACO
  question with its candidate answers, an e-SNLI premise with its hypotheses) are drawn together,
  so no question is in two splits. Draws are deterministic by seed.
- Prompt format. Labels open with a space after the prompt's closing "Answer:" (what a BPE
  tokenizer's words look like there); ICL shots are separated by a blank line, and generation
  stops where a next example would begin (`stop`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import re
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import datasets

from w2s_ray.capabilities.base import Capability, Example

log = logging.getLogger(__name__)

EXTENSIONS = {"parquet": "parquet", "json": "jsonl"}


class Dropped(NamedTuple):
    """Why an upstream row gives no Example (counted and logged by the loader)."""

    reason: str


def example(prompt: str, label: str, gold: str, group: str | None = None) -> Example:
    """An item whose label opens with the space a model writes after the prompt's "Answer:"."""
    return Example(prompt, " " + label, gold, group)


@dataclass
class Pools:
    """The training and test pools of a loaded dataset, and the rows left out of each, by reason."""

    train: list[Example]
    test: list[Example]
    dropped: dict[str, Counter] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        for split, counts in self.dropped.items():
            if counts:
                why = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
                parts.append(f"{sum(counts.values())} of {self.rows[split]} rows of {split!r} dropped: {why}")
        return "; ".join(parts) or "no row dropped"


class HubCapability(Capability):
    hub_id: str
    config: str | None = None
    #: for loading-script datasets: "refs/convert/parquet" with `hub_data_dir` = the config
    revision: str | None = None
    hub_data_dir: str | None = None
    #: for datasets published as files rather than a hub repository: split -> URL
    hub_files: ClassVar[dict[str, str] | None] = None
    #: the mirror's file format: "parquet", or "json" (JSON lines) for datasets published so
    mirror_format: str = "parquet"
    #: upstream split that feeds D^a and D^b, and the one that feeds test
    train_split: str = "train"
    test_split: str = "test"
    #: rows of (train_split, test_split) as the dataset card states them: checked before any download
    card_rows: tuple[int, int] | None = None
    #: the names of integer label columns, in index order, for files without ClassLabel metadata
    label_names: ClassVar[dict[str, tuple[str, ...]]] = {}
    # 2: labels open with a space, shots end at a blank line, stop strings, grouped carving
    version = 2
    shot_joiner = ""
    shot_separator = "\n\n"

    @abstractmethod
    def to_example(self, row: dict) -> Example | Dropped:
        """One upstream row as an Example, or why it gives none (e.g. no usable label)."""

    def sample(self, rng: random.Random, split: str) -> Example:
        raise NotImplementedError(f"{self.name} is loaded, not generated: its splits come from splits()")

    # --- source -----------------------------------------------------------------------------

    def source(self) -> str:
        if self.hub_files:
            return f"{self.mirror_format} files " + ", ".join(self.hub_files.values())
        rev = f"@{self.revision}/{self.hub_data_dir}" if self.revision else ""
        return f"hub {self.hub_id}" + (f" config {self.config}" if self.config else "") + rev

    def mirror_files(self, data_dir: str) -> dict[str, Path]:
        ext = EXTENSIONS[self.mirror_format]
        return {s: Path(data_dir) / self.name / f"{s}.{ext}" for s in (self.train_split, self.test_split)}

    def check_mirror(self, data_dir: str) -> None:
        for split, path in self.mirror_files(data_dir).items():
            if not path.is_file():
                raise FileNotFoundError(
                    f"{self.name}: no mirror file {path} (upstream split {split!r} of {self.source()}); "
                    f"write it with `python -m w2s_ray.data_mirror --out {data_dir} {self.name}`")

    def load(self, data_dir: str | None) -> datasets.DatasetDict:
        """The upstream splits this capability uses, from the mirror or the hub."""
        if data_dir is not None:
            self.check_mirror(data_dir)
            files = {s: str(p) for s, p in self.mirror_files(data_dir).items()}
            return datasets.load_dataset(self.mirror_format, data_files=files)
        if self.hub_files:
            return datasets.load_dataset(self.mirror_format, data_files=self.hub_files)
        dd = datasets.load_dataset(self.hub_id, self.config, revision=self.revision,
                                   data_dir=self.hub_data_dir)
        return datasets.DatasetDict({s: dd[s] for s in (self.train_split, self.test_split)})

    def label_columns(self, ds: datasets.Dataset) -> dict[str, tuple[str, ...]]:
        """Columns whose integers stand for names: ClassLabel ones, and integer columns the
        module names (a mirror written without the ClassLabel metadata)."""
        out = {c: tuple(f.names) for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
        for col, names in self.label_names.items():
            feature = ds.features.get(col)
            if col not in out and isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
                out[col] = names
        return out

    def rows(self, ds: datasets.Dataset) -> tuple[list[Example], Counter]:
        """The Examples of an upstream split, and the rows that gave none, counted by reason."""
        labels = self.label_columns(ds)
        out, dropped = [], Counter()
        for row in ds:
            bad = [f"{c} {row[c]} is none of its {len(n)} names" for c, n in labels.items()
                   if row[c] is not None and not -1 <= row[c] < len(n)]
            if bad:
                dropped[bad[0]] += 1
                continue
            for col, names in labels.items():
                value = row[col]
                row[col] = names[value] if value is not None and value >= 0 else None
            ex = self.to_example(row)
            if isinstance(ex, Dropped):
                dropped[ex.reason] += 1
            else:
                out.append(ex)
        return out, dropped

    def load_pools(self, data_dir: str | None) -> Pools:
        """(training pool, test pool) with distinct prompts, no prompt or group in both, and the
        rows left out; the counts are logged."""
        dd = self.load(data_dir)
        (train, train_drops), (test, test_drops) = (self.rows(dd[s]) for s in (self.train_split, self.test_split))
        test, test_drops["repeated prompt"] = distinct(test, exclude=set())
        prompts, groups = {e.prompt for e in test}, {e.group for e in test if e.group is not None}
        kept = [e for e in train if e.prompt not in prompts and (e.group is None or e.group not in groups)]
        train_drops["question also in the test split"], train = len(train) - len(kept), kept
        train, train_drops["repeated prompt"] = distinct(train, exclude=set())
        pools = Pools(train, test, {s: +c for s, c in ((self.train_split, train_drops),
                                                         (self.test_split, test_drops))},
                      {s: len(dd[s]) for s in (self.train_split, self.test_split)})
        log.info("%s: %s", self.name, pools.describe())
        return pools

    def pools(self, data_dir: str | None) -> tuple[list[Example], list[Example]]:
        """(training pool, test pool) with distinct prompts, no prompt in both."""
        p = self.load_pools(data_dir)
        return p.train, p.test

    # --- splits -----------------------------------------------------------------------------

    def check_sizes(self, sizes: dict[str, int], train: int, test: int, where: str,
                    evaluate_on: str = "test") -> None:
        if evaluate_on == "validation":
            wanted = sizes["labeled"] + sizes["unlabeled"] + sizes["test"]
            if wanted > train:
                raise ValueError(f"{self.name}: labeled + unlabeled + validation (the test size) = {wanted} "
                                 f"exceeds the {train} items of upstream split {self.train_split!r} ({where})")
            return
        wanted = sizes["labeled"] + sizes["unlabeled"]
        if wanted > train:
            raise ValueError(f"{self.name}: labeled + unlabeled = {wanted} exceeds the {train} items "
                             f"of upstream split {self.train_split!r} ({where})")
        if sizes["test"] > test:
            raise ValueError(f"{self.name}: test = {sizes['test']} exceeds the {test} items of "
                             f"upstream split {self.test_split!r} ({where})")

    def validate(self, sizes: dict[str, int], data_dir: str | None, evaluate_on: str = "test") -> None:
        if data_dir is not None:
            self.check_mirror(data_dir)  # the mirror's sizes are known once it is read
        elif self.card_rows:
            self.check_sizes(sizes, *self.card_rows, f"dataset card of {self.source()}", evaluate_on)

    def splits(self, seed: int, sizes: dict[str, int], data_dir: str | None,
               evaluate_on: str = "test") -> dict[str, list[Example]]:
        """D^a and D^b from the upstream training split, test from its test split; a validation
        split is carved from the training split after D^a and D^b (the same D^a and D^b as with
        test: the draws take the same groups in the same order)."""
        pools = self.load_pools(data_dir)
        where = f"distinct prompts in {data_dir or self.source()}; {pools.describe()}"
        self.check_sizes(sizes, len(pools.train), len(pools.test), where, evaluate_on)
        draws = [sizes["labeled"], sizes["unlabeled"]] + ([sizes["test"]] if evaluate_on == "validation" else [])
        labeled, unlabeled, *validation = grouped_draw(pools.train, draws, random.Random(f"{self.name}:{seed}"))
        if len(unlabeled) < sizes["unlabeled"]:
            raise ValueError(f"{self.name}: labeled + unlabeled = {sizes['labeled'] + sizes['unlabeled']} "
                             f"items in whole groups exceed the {len(pools.train)} items of upstream split "
                             f"{self.train_split!r} ({where}): the last group of D^a leaves a remainder")
        if validation:
            return {"labeled": labeled, "unlabeled": unlabeled, "test": validation[0]}
        return {"labeled": labeled, "unlabeled": unlabeled,
                "test": random.Random(f"{self.name}:{seed}:test").sample(pools.test, sizes["test"])}

    def key_fields(self, data_dir: str | None) -> dict:
        """A mirror by its files' content, not their path: an edited or re-written mirror gets
        new splits, and the same files moved elsewhere (or on another node) keep theirs."""
        if data_dir is None:
            return {"source": self.source()}
        files = self.mirror_files(data_dir)
        return {"source": "mirror " + ", ".join(f"{s}:{content_hash(p)}" for s, p in sorted(files.items()))}


def content_hash(path: Path) -> str:
    stat = path.stat()
    return _hash_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _hash_file(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, remembered while its path, mtime and size stay the same (every trial
    keys the splits again)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def distinct(examples: list[Example], exclude: set[str]) -> tuple[list[Example], int]:
    """The first example of each prompt, in order, leaving out the excluded prompts; and how
    many repeats of a kept prompt were left out."""
    seen: dict[str, Example] = {}
    for e in examples:
        if e.prompt not in exclude:
            seen.setdefault(e.prompt, e)
    return list(seen.values()), sum(e.prompt not in exclude for e in examples) - len(seen)


def grouped_draw(pool: list[Example], sizes: list[int], rng: random.Random) -> list[list[Example]]:
    """Consecutive draws of `sizes` items from `pool` in a random order of its groups, each group
    whole: a draw that a group would overflow keeps only what it needs and the group's remainder
    is used by no other draw, so no group is in two draws."""
    groups: dict[str, list[Example]] = {}
    for e in pool:
        groups.setdefault(e.prompt if e.group is None else e.group, []).append(e)
    order = list(groups.values())
    rng.shuffle(order)
    draws: list[list[Example]] = [[] for _ in sizes]
    d = 0
    for group in order:
        while d < len(sizes) and len(draws[d]) == sizes[d]:
            d += 1
        if d == len(sizes):
            break
        draws[d] += group[: sizes[d] - len(draws[d])]
    return draws


def label_word(completion: str, words: tuple[str, ...]) -> str | None:
    """The label word an output gives: the one it opens with, else the last one it names (a
    chain of thought ends in its conclusion)."""
    found = re.findall(r"[a-z]+", completion.lower())
    named = [w for w in found if w in words]
    if not named:
        return None
    return found[0] if found[0] in words else named[-1]
