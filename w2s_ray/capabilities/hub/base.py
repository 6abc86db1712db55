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
- Class labels. ClassLabel columns reach the modules as their names (-1, "no label", as None).
- Carving (Burns et al. 2023). D^a and D^b are disjoint random draws from the upstream training
  pool, test from the upstream evaluation split; prompts are de-duplicated within and across the
  two pools, so no two splits share a prompt. Draws are deterministic by seed.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import datasets

from w2s_ray.capabilities.base import Capability, Example

EXTENSIONS = {"parquet": "parquet", "json": "jsonl"}


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

    @abstractmethod
    def to_example(self, row: dict) -> Example | None:
        """One upstream row as an Example, or None for a row without a usable label."""

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

    def rows(self, ds: datasets.Dataset) -> list[Example]:
        labels = {c: f for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
        out = []
        for row in ds:
            for col, feature in labels.items():
                row[col] = feature.int2str(row[col]) if row[col] is not None and row[col] >= 0 else None
            if (ex := self.to_example(row)) is not None:
                out.append(ex)
        return out

    def pools(self, data_dir: str | None) -> tuple[list[Example], list[Example]]:
        """(training pool, test pool) with distinct prompts, no prompt in both."""
        dd = self.load(data_dir)
        test = distinct(self.rows(dd[self.test_split]), exclude=set())
        return distinct(self.rows(dd[self.train_split]), exclude={e.prompt for e in test}), test

    # --- splits -----------------------------------------------------------------------------

    def check_sizes(self, sizes: dict[str, int], train: int, test: int, where: str) -> None:
        wanted = sizes["labeled"] + sizes["unlabeled"]
        if wanted > train:
            raise ValueError(f"{self.name}: labeled + unlabeled = {wanted} exceeds the {train} items "
                             f"of upstream split {self.train_split!r} ({where})")
        if sizes["test"] > test:
            raise ValueError(f"{self.name}: test = {sizes['test']} exceeds the {test} items of "
                             f"upstream split {self.test_split!r} ({where})")

    def validate(self, sizes: dict[str, int], data_dir: str | None) -> None:
        if data_dir is not None:
            self.check_mirror(data_dir)  # the mirror's sizes are known once it is read
        elif self.card_rows:
            self.check_sizes(sizes, *self.card_rows, f"dataset card of {self.source()}")

    def splits(self, seed: int, sizes: dict[str, int], data_dir: str | None) -> dict[str, list[Example]]:
        train, test = self.pools(data_dir)
        self.check_sizes(sizes, len(train), len(test),
                         f"distinct prompts in {data_dir or self.source()}")
        drawn = random.Random(f"{self.name}:{seed}").sample(train, sizes["labeled"] + sizes["unlabeled"])
        return {"labeled": drawn[: sizes["labeled"]], "unlabeled": drawn[sizes["labeled"] :],
                "test": random.Random(f"{self.name}:{seed}:test").sample(test, sizes["test"])}

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


def distinct(examples: list[Example], exclude: set[str]) -> list[Example]:
    """The first example of each prompt, in order, leaving out the excluded prompts."""
    seen: dict[str, Example] = {}
    for e in examples:
        if e.prompt not in exclude:
            seen.setdefault(e.prompt, e)
    return list(seen.values())


def label_word(completion: str, words: tuple[str, ...]) -> str | None:
    """The label word an output gives: the one it opens with, else the last one it names (a
    chain of thought ends in its conclusion)."""
    found = re.findall(r"[a-z]+", completion.lower())
    named = [w for w in found if w in words]
    if not named:
        return None
    return found[0] if found[0] in words else named[-1]
