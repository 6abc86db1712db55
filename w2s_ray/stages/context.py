"""What every stage receives: the config, the store, the builder, the trial's seed, and each
rung's layout and base model, resolved here once."""

from __future__ import annotations

from dataclasses import dataclass, field

from w2s_ray.artifacts import Artifact, Builder, Store
from w2s_ray.config import SweepConfig
from w2s_ray.ladder import publish
from w2s_ray.models import layout, rungs
from w2s_ray.models.location import ModelRef
from w2s_ray.stages import fetch


@dataclass
class StageContext:
    config: SweepConfig
    store: Store
    builder: Builder
    seed: int
    rungs: dict[str, str] = field(default_factory=dict)  # trained model id -> rung of its base
    pair: tuple[str, str] | None = None  # the trial's (weak, strong) rungs, when in a trial
    layouts: dict[str | None, layout.Layout] = field(default_factory=dict)  # rung -> its layout

    @property
    def data_seed(self) -> int:
        """The seed that carves the splits: fixed across trials unless `data_seed: same`."""
        fixed = self.config.data_seed
        return self.seed if fixed == "same" else fixed

    def layout(self, rung: str | None) -> layout.Layout:
        """How the stages of `rung`'s models run (`models/layout.py`)."""
        if rung not in self.layouts:
            self.layouts[rung] = layout.resolve(self.config, rung)
        return self.layouts[rung]

    def base(self, rung: str) -> ModelRef:
        """The rung's base checkpoint: a hub rung is fetched into the store first (once), a tiny
        rung was built into it by the sweep, a local path is read as it is."""
        spec = self.config.ladder.rung(rung)
        match rungs.kind(spec):
            case "hub":
                return self.model(fetch.fetched(self.store, self.builder, spec), rung)
            case "tiny":
                art = publish.artifact(rungs.tiny_name(spec))
                return ModelRef(id=self.base_id(rung), source=self.store.location(art), rung=rung, stored=True)
            case _:
                return ModelRef(id=self.base_id(rung), source=spec.model, rung=rung)

    def base_id(self, rung: str) -> str:
        """`base(rung).id` without fetching anything: what a trained model's key names."""
        spec = self.config.ladder.rung(rung)
        match rungs.kind(spec):
            case "hub":
                return fetch.artifact(spec).id
            case "tiny":
                return f"base:{publish.identity(rungs.tiny_name(spec))}"
            case _:
                return f"base:{rungs.path_identity(spec)}"

    def model(self, art: Artifact, rung: str | None = None) -> ModelRef:
        return ModelRef(id=art.id, source=self.store.location(art), artifact=art,
                        rung=rung or self.rungs.get(art.id), stored=True)
