"""How often a training stage writes a resumable checkpoint, and what that costs: one rule for
the training loop (`runtime/trainer.py`) and the dry run (`plan.py`).

A checkpoint holds the weights and AdamW's two moments in fp32 (`BYTES_PER_PARAM`), 1.16 TB
at 72B: a stage shorter than `train.checkpoint_min_steps` writes none (a failure then restarts
the stage), a longer one every `train.checkpoint_every` steps, or once per epoch when that is 0.
Local mode (`num_workers: 0`) keeps nothing Ray could restore and writes none.
"""

from __future__ import annotations

from w2s_ray.config import TrainHParams

BYTES_PER_PARAM = 12


def interval(hp: TrainHParams, steps: int, steps_per_epoch: int) -> int | None:
    """Steps between checkpoints, or None where the stage writes none."""
    if hp.num_workers == 0 or steps < hp.checkpoint_min_steps:
        return None
    return hp.checkpoint_every or max(1, steps_per_epoch)


def count(hp: TrainHParams, steps: int, steps_per_epoch: int) -> int:
    """Checkpoints the stage writes: at every interval before its last step (the last step's
    model is the stage's artifact)."""
    every = interval(hp, steps, steps_per_epoch)
    return 0 if every is None else (steps - 1) // every
