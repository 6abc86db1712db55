"""The checks that tie a config to the registries: capabilities and what their data can hold,
methods, and the model sizes the resource plan lays out. The CLI runs them once, before Ray
starts; a config is then only re-validated field by field in each trial (`config.py`), which
imports nothing of the package.
"""

from __future__ import annotations

from typing import Any

from w2s_ray import methods
from w2s_ray.capabilities import registry
from w2s_ray.config import ConfigError, SweepConfig, load_config
from w2s_ray.models import layout


def problem(config: SweepConfig) -> str | None:
    """The first thing in `config` the registries do not allow, as a message that names the
    field and what is allowed there; None when there is none."""
    known = registry.names()
    for cap in config.capabilities:
        if cap not in known:
            return f"capabilities: unknown capability {cap!r}; allowed: {known}"
    for cap in config.capabilities:
        try:
            registry.get(cap).validate(config.sizes_for(cap).model_dump(), config.data_dir, config.evaluate_on)
        except FileNotFoundError as err:  # a missing mirror file
            return f"data_dir: {err}"
        except ValueError as err:
            field = f"split_overrides.{cap}" if cap in config.split_overrides else "splits"
            return f"{field}: {err}"
    if config.train.toward_base or config.stage2.toward_base:
        for rung in config.ladder.rungs:
            if layout.resolve(config, rung.name).train.strategy == "fsdp":
                field = "train.toward_base" if config.train.toward_base else "stage2.toward_base"
                return (f"{field}: the resource plan trains rung {rung.name!r} with fsdp, and weight "
                        "averaging supports ddp only; allowed: 0 there")
    for name in config.methods:
        try:
            methods.resolve(name, config.capabilities)
        except ValueError as err:
            return str(err)
    for needed in ("weak", "ceiling"):
        if needed not in config.methods:
            return (f"methods: {needed!r} is required (PGR is measured against it); "
                    f"allowed methods: {methods.allowed()}")
    return None


def check(config: SweepConfig) -> SweepConfig:
    """`config`, once the registries allow it; else ConfigError."""
    found = problem(config)
    if found is not None:
        raise ConfigError(f"invalid config:\n  {found}")
    return config


def checked_config(preset: str, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """The driver's config: loaded, validated field by field, then against the registries."""
    return check(load_config(preset, overrides))
