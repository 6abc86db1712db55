"""The method registry: names (some with a parameter, `noise-0.5`, `weaken-scan`) to recipes.

A recipe is `(ctx, weak, strong[, arg]) -> ModelRef | list[Target]`: the model to evaluate on the
test split, or explicit (model, test table) targets when a method evaluates several models
(wts-s) or changes the prompts (icl).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

from w2s_ray.artifacts import Artifact
from w2s_ray.stages.context import ModelRef

METHODS: dict[str, Callable] = {}
#: prefix -> (recipe, what follows the prefix): "capability" or "proportion"
FAMILIES: dict[str, tuple[Callable, str]] = {}


class Target(NamedTuple):
    model: ModelRef
    test: Artifact


class NotApplicable(Exception):
    """The method has no meaning for this pair (e.g. weaken-* when no rung is below the weak one)."""


def method(name: str, family: str | None = None) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        if family is None:
            METHODS[name] = fn
        else:
            FAMILIES[name] = (fn, family)
        return fn

    return register


def allowed() -> list[str]:
    arg = {"capability": "<capability>", "proportion": "<p in [0, 1]>"}
    return [*METHODS, *(f"{prefix}-{arg[kind]}" for prefix, (_, kind) in FAMILIES.items())]


def resolve(name: str, capabilities: list[str]) -> Callable:
    """The recipe for a method name, its parameter bound; ValueError names what is allowed."""
    if name in METHODS:
        return METHODS[name]
    prefix, _, arg = name.partition("-")
    if prefix in FAMILIES and arg:
        fn, kind = FAMILIES[prefix]
        if kind == "capability":
            if arg not in capabilities:
                raise ValueError(f"methods: {name!r} names capability {arg!r}; allowed: {capabilities}")
            if prefix == "remove" and len(capabilities) < 2:
                raise ValueError(f"methods: {name!r} would leave no capability to train on")
            return functools.partial(fn, capability=arg)
        try:
            p = float(arg)
        except ValueError:
            p = -1.0
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"methods: {name!r}: the proportion must be a number in [0, 1], e.g. {prefix}-0.25")
        return functools.partial(fn, p=p)
    raise ValueError(f"methods: unknown method {name!r}; allowed: {allowed()}")


def targets(ctx, name: str, weak: str, strong: str, test: Artifact) -> list[Target]:
    """What the method's evaluation runs on: its model on `test`, or the recipe's own targets
    (wts-s, icl). Raises NotApplicable where the method does not apply to the pair."""
    made = resolve(name, ctx.config.capabilities)(ctx, weak, strong)
    return made if isinstance(made, list) else [Target(made, test)]
