"""What kind of model a ladder rung names: decided here, and only here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from w2s_ray.config import RungSpec

TINY = "tiny:"

Kind = Literal["tiny", "hub", "path"]


def kind(rung: RungSpec) -> Kind:
    """`tiny:<rung>`: a rung of the self-built ladder, built into the store by the sweep; a hub
    id (`org/name`, fetched into the store at its pinned revision); else a local path, which
    `from_pretrained` reads as it is."""
    model = rung.model
    if model.startswith(TINY):
        return "tiny"
    if model.startswith(("/", ".", "~")) or Path(model).is_dir():
        return "path"
    return "hub" if model.count("/") == 1 else "path"


def tiny_name(rung: RungSpec) -> str:
    """The tiny ladder's rung a `tiny:` rung names."""
    return rung.model.removeprefix(TINY)
