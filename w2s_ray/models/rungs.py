"""What kind of model a ladder rung names, and where its config.json is: decided here, and only here."""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from w2s_ray import integrity
from w2s_ray.artifacts import cache_dir
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


def path_identity(rung: RungSpec) -> str:
    """What names a path rung's base model: a local folder by its files' content, so that a
    checkpoint overwritten in place is a new base (and one moved elsewhere the same); a name
    that is no local folder (`from_pretrained` resolves it) by the name. Each file is hashed
    once per machine while its size and mtime stay the same (`integrity.DigestCache`)."""
    folder = Path(rung.model).expanduser()
    if not folder.is_dir():
        return rung.model
    return "files:" + integrity.folder_digest(folder, integrity.DigestCache(cache_dir() / "digests.json"))


def tiny_name(rung: RungSpec) -> str:
    """The tiny ladder's rung a `tiny:` rung names."""
    return rung.model.removeprefix(TINY)


def carried_config(model: str) -> dict[str, Any] | None:
    """The architecture fields of a hub model's config.json as the project carries them
    (`models/configs/<org>/<name>.json`): what sizes a plan offline, before any fetch."""
    found = files("w2s_ray.models").joinpath("configs", *f"{model}.json".split("/"))
    return json.loads(found.read_text()) if found.is_file() else None


def config(rung: RungSpec) -> dict[str, Any] | None:
    """The rung's config.json: a local path's own; a hub id's from this machine's Hugging Face
    cache at the rung's revision (`main` while unpinned), the snapshot the fetch stage copies,
    else the copy the project carries, else the file alone from the hub (a few kB, on the
    machine that plans: a cluster's head has no model caches). None for a tiny rung (the
    config's own fields lay it out) and for a model found nowhere."""
    match kind(rung):
        case "tiny":
            return None
        case "path":
            found = Path(rung.model).expanduser() / "config.json"
            return json.loads(found.read_text()) if found.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(rung.model, "config.json", revision=rung.revision)
    if isinstance(cached, str):  # else None (not cached) or a marker that the repo has no such file
        return json.loads(Path(cached).read_text())
    carried = carried_config(rung.model)
    return carried if carried is not None else downloaded_config(rung.model, rung.revision)


@functools.cache  # a planner asks once per stage; an unreachable hub should cost one try, not many
def downloaded_config(model: str, revision: str | None) -> dict[str, Any] | None:
    """config.json from the hub in one request (hf_hub_download retries for half a minute), or
    None where the hub cannot be reached, is switched off (HF_HUB_OFFLINE) or does not have it;
    the caller names what is missing."""
    import httpx
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        reply = httpx.get(hf_hub_url(model, "config.json", revision=revision), headers=build_hf_headers(),
                          follow_redirects=True, timeout=10)
        return reply.json() if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):  # unreachable, or not JSON
        return None
