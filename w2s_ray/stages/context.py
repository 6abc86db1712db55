"""What every stage receives: the config, the store, the builder, and the trial's seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from w2s_ray.artifacts import Artifact, Builder, Store
from w2s_ray.config import SweepConfig
from w2s_ray.models.ladder import base_source
from w2s_ray.stages import fetch


@dataclass(frozen=True)
class ModelRef:
    """A model as a stage input: a base checkpoint (hub id / path) or a trained artifact."""

    id: str
    source: str  # hub id or local path for a base model; a store folder for an artifact
    artifact: Artifact | None = None
    rung: str | None = None  # the ladder rung it descends from: picks its resource plan
    stored: bool = False  # `source` is a folder of the store (fetched to a node's cache if remote)


def local_model_path(root: str, source: str, stored: bool, weights: bool = True) -> str:
    """A local path for from_pretrained: a folder of a remote store is fetched to this node's cache
    (config and tokenizer only, when the caller never reads the weights)."""
    return Store(root).local_dir(source, weights) if stored else source


@dataclass
class StageContext:
    config: SweepConfig
    store: Store
    builder: Builder
    seed: int
    rungs: dict[str, str] = field(default_factory=dict)  # trained model id -> rung of its base
    pair: tuple[str, str] | None = None  # the trial's (weak, strong) rungs, when in a trial

    @property
    def data_seed(self) -> int:
        """The seed that carves the splits: fixed across trials unless `data_seed: same`."""
        fixed = self.config.data_seed
        return self.seed if fixed == "same" else fixed

    def base(self, rung: str) -> ModelRef:
        """The rung's base checkpoint; a hub rung is fetched into the store first (once)."""
        spec = self.config.ladder.rung(rung)
        if fetch.is_hub(spec):
            return self.model(fetch.fetched(self.store, self.builder, spec), rung)
        identity, source, stored = base_source(spec, self.store)
        return ModelRef(id=f"base:{identity}", source=source, rung=rung, stored=stored)

    def base_id(self, rung: str) -> str:
        """`base(rung).id` without fetching anything."""
        spec = self.config.ladder.rung(rung)
        if fetch.is_hub(spec):
            return fetch.artifact(spec).id
        return f"base:{base_source(spec, self.store)[0]}"

    def model(self, art: Artifact, rung: str | None = None) -> ModelRef:
        return ModelRef(id=art.id, source=self.store.location(art), artifact=art,
                        rung=rung or self.rungs.get(art.id), stored=True)
