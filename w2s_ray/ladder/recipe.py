"""The tiny ladder's recipe: the one place that decides its rungs' sizes, budgets and corpus,
and the names its builds are kept under. Data only: reading a rung's identity (every trained
model's key names it) needs neither torch nor Ray."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from w2s_ray.artifacts import cache_dir
from w2s_ray.capabilities import registry

#: bump when the pretraining code or the checkpoint layout changes
BUILDER_VERSION = 4


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RungRecipe:
    name: str
    hidden: int
    layers: int
    heads: int
    steps: int
    lr: float
    #: share of every capability's items whose facts this rung's corpus states (nested: a smaller
    #: share is a subset of a larger one)
    knows: float = 1.0

    def key(self) -> str:
        return _hash(dataclasses.asdict(self))


@dataclass(frozen=True)
class LadderRecipe:
    rungs: tuple[RungRecipe, ...]
    #: corpus share by documents: capabilities by name, plus "bridge" prose that uses the
    #: fine-tuning prompts' header words (unseen prompt words wiped a rung's knowledge before)
    mixture: tuple[tuple[str, float], ...]
    corpus_docs: int
    seq_len: int = 64
    batch_size: int = 16
    warmup_steps: int = 30
    #: the learning rate stays at its peak after the warm-up and falls linearly to zero over this
    #: last share of the steps; a cosine schedule left the small rungs' knowledge seed-bound
    decay_fraction: float = 0.25
    weight_decay: float = 0.1
    adam_betas: tuple[float, float] = (0.9, 0.98)
    seed: int = 0

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.mixture if name != BRIDGE)

    def key(self) -> str:
        """What every rung shares (corpus, tokenizer, optimiser); each rung adds its own key,
        so recalibrating one rung's budget rebuilds that rung only."""
        shared = {k: v for k, v in dataclasses.asdict(self).items() if k != "rungs"}
        versions = {c: registry.get(c).version for c in self.capabilities}
        return _hash({"recipe": shared, "versions": versions, "builder": BUILDER_VERSION})

    def rung(self, name: str) -> RungRecipe:
        return next(r for r in self.rungs if r.name == name)


BRIDGE = "bridge"

# Calibrated in docs/tiny-ladder.md. Knowledge arrives with optimizer steps more than with size, and
# when it arrives moved with the pretraining seed (round 6), so each rung's corpus states the facts
# of a nested share of the items (round 7): the rungs know what their share lets them, on every
# seed (probe averages over seeds 0-3, validation: t1 .31-.37, t2 .46-.54, t3 .63-.74, t4 .96-.98).
# t4's 900 steps on one core bound the build (~4 min on 2 cores).
# head_dim 32: vLLM's CPU attention supports it (16 fails there).
RECIPE = LadderRecipe(
    rungs=(
        RungRecipe("t1", hidden=64, layers=2, heads=2, steps=500, lr=3e-3, knows=0.35),
        RungRecipe("t2", hidden=96, layers=3, heads=3, steps=650, lr=3e-3, knows=0.55),
        RungRecipe("t3", hidden=128, layers=4, heads=4, steps=800, lr=2e-3, knows=0.75),
        RungRecipe("t4", hidden=192, layers=4, heads=6, steps=900, lr=1.5e-3, knows=1.0),
    ),
    mixture=(("scan", 0.27), ("arithmetic", 0.27), ("facts", 0.23), ("temporal", 0.18), (BRIDGE, 0.05)),
    corpus_docs=82_000,
)


def ladder_dir(recipe: LadderRecipe = RECIPE) -> Path:
    return cache_dir() / "tiny-ladder" / recipe.key()


def rung_dirname(name: str, recipe: LadderRecipe = RECIPE) -> str:
    return f"{name}-{recipe.rung(name).key()}"


def rung_path(name: str, recipe: LadderRecipe = RECIPE) -> Path:
    return ladder_dir(recipe) / rung_dirname(name, recipe)


#: the built rungs shipped with the package (`python -m w2s_ray.ladder.ship` writes them): a
#: rung found here for the recipe's key is copied, not pretrained (tests/test_ladder.py checks
#: that pretraining from the recipe gives them bit for bit)
PACKAGED = Path(__file__).parent / "weights"


def packaged_path(name: str, recipe: LadderRecipe = RECIPE) -> Path:
    return PACKAGED / recipe.key() / rung_dirname(name, recipe)
