"""The capability registry: modules register instances under their name."""

from __future__ import annotations

import importlib

from w2s_ray.capabilities.base import Capability
from w2s_ray.capabilities.hub import MODULES as HUB_MODULES

_MODULES = ("scan", "arithmetic", "facts", "temporal", *(f"hub.{m}" for m in HUB_MODULES))
_REGISTRY: dict[str, Capability] = {}


def register(cap: Capability) -> Capability:
    _REGISTRY[cap.name] = cap
    return cap


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(f"w2s_ray.capabilities.{module}")


def names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get(name: str) -> Capability:
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"unknown capability {name!r}; allowed: {sorted(_REGISTRY)}")
    return _REGISTRY[name]
