"""Methods (WTS, ours, the ablations and analyses) as short recipes over the shared stages.

Artifacts are content-addressed, so a recipe that asks for a stage another recipe (or another
trial) already built gets it back: the wts model of a pair is trained once and serves ours, the
relabel and every ablation that starts from it.
"""

from w2s_ray.methods import ablations, baselines, burns, ours, w2sr  # noqa: F401  (registers the recipes)
from w2s_ray.methods.registry import METHODS, NotApplicable, Target, allowed, resolve, targets

__all__ = ["METHODS", "NotApplicable", "Target", "allowed", "resolve", "targets"]
