"""Resolving a ladder rung to something `from_pretrained` loads: a hub id, a path, or a tiny rung."""

from __future__ import annotations

from w2s_ray.config import RungSpec
from w2s_ray.models import tiny_ladder

TINY = "tiny:"


def tiny_rungs(rungs: list[RungSpec]) -> list[str]:
    return [r.model.removeprefix(TINY) for r in rungs if r.model.startswith(TINY)]


def base_source(rung: RungSpec) -> tuple[str, str]:
    """(identity for artifact keys, what from_pretrained loads)."""
    if rung.model.startswith(TINY):
        name = rung.model.removeprefix(TINY)
        recipe = tiny_ladder.RECIPE
        if name not in [r.name for r in recipe.rungs]:
            raise KeyError(f"tiny ladder has no rung {name!r}; allowed: {[r.name for r in recipe.rungs]}")
        return f"tiny:{recipe.key()}/{tiny_ladder.rung_dirname(name)}", str(tiny_ladder.rung_path(name))
    return rung.model, rung.model
