"""Where a model's files are, as stages and the processes Ray starts for them see it."""

from __future__ import annotations

from dataclasses import dataclass

from w2s_ray.artifacts import Artifact, Store


@dataclass(frozen=True)
class ModelLocation:
    """What a process needs to load a model on its own node: a folder of the store `root`
    (`stored`), fetched to the node's cache when the store is remote, or a path or hub id that
    `from_pretrained` reads as it is. The one form a model's place crosses Ray in."""

    root: str
    path: str
    stored: bool = False

    def local(self, weights: bool = True) -> str:
        """A local path for from_pretrained (config and tokenizer only, when the caller never
        reads the weights)."""
        return Store(self.root).local_dir(self.path, weights) if self.stored else self.path


@dataclass(frozen=True)
class ModelRef:
    """A model as a stage input: a base checkpoint (hub id / path) or a trained artifact."""

    id: str
    source: str  # hub id or local path for a base model; a store folder for an artifact
    artifact: Artifact | None = None
    rung: str | None = None  # the ladder rung it descends from: picks its layout
    stored: bool = False  # `source` is a folder of the store (fetched to a node's cache if remote)

    def at(self, root: str) -> ModelLocation:
        return ModelLocation(root, self.source, self.stored)
