"""How each rung's stages run: resolved once, here, for the stages, the planner and the dry run.

A config's `train` and `inference` sections say how work is laid out; with `plan: true` the
resource plan of the rung's architecture (`resources.py`, from its config.json: `rungs.config`)
replaces the layout fields (workers, strategy, accumulation, precision; tensor parallelism,
concurrency), never the optimisation recipe. A rung of unknown architecture (a tiny one, or no
config.json found) keeps the config's own fields. Stage 2 and the reward model start from
`train` and change their own recipe fields (lr, epochs, weight averaging) before the plan
applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from w2s_ray.config import InferenceSpec, SweepConfig, TrainHParams
from w2s_ray.models import resources, rungs


@dataclass(frozen=True)
class Layout:
    """One rung's stages: `arch` is what its plan and memory estimates are sized from (None:
    unknown, the config's own fields)."""

    arch: resources.Arch | None
    train: TrainHParams  # every supervised stage
    stage2: TrainHParams  # stage 2 of ours and ours-random
    reward: TrainHParams  # the reward model's training
    inference: InferenceSpec  # generation and reward scoring
    dpo: TrainHParams  # DPO (w2sr-dpo, ours-dpo-reward): two sequences per row


def reward_recipe(config: SweepConfig) -> TrainHParams:
    spec = config.reward
    update = {k: v for k, v in {"lr": spec.lr, "epochs": spec.epochs}.items() if v is not None}
    # The classifier head starts from scratch: there is no base to average it toward.
    return config.train.model_copy(update={**update, "toward_base": 0.0})


def dpo_recipe(config: SweepConfig) -> TrainHParams:
    spec = config.w2sr
    update = {k: v for k, v in {"lr": spec.lr, "epochs": spec.epochs}.items() if v is not None}
    # DPO's pull toward the reference is its beta-weighted log-ratio, not weight averaging.
    return config.train.model_copy(update={**update, "toward_base": 0.0})


def resolve(config: SweepConfig, rung: str | None) -> Layout:
    """The layout of the stages that run `rung`'s models (a base or one trained from it); `None`
    (a model of no rung) takes the config's own fields."""
    found = rungs.config(config.ladder.rung(rung)) if rung is not None else None
    arch = resources.arch_of(found) if found is not None else None

    def planned(hp: TrainHParams) -> TrainHParams:
        return resources.training_hparams(hp, arch) if arch and hp.plan else hp

    inf = config.inference
    return Layout(arch=arch, train=planned(config.train), stage2=planned(config.stage2_hparams()),
                  reward=planned(reward_recipe(config)),
                  inference=resources.inference_spec(inf, arch) if arch and inf.plan else inf,
                  dpo=resources.training_hparams(dpo_recipe(config), arch, sequences=2)
                  if arch and config.train.plan else dpo_recipe(config))
