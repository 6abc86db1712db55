"""Hub checkpoints into the store, once per (model, revision), before any stage needs them.

A hub rung is fetched by a stage of its own: a trained model's key names the exact revision it
started from (a hub repository's `main` moves), every node then reads the weights from the store
through its node cache like any trained model, and no training process group waits in a
collective while one of its ranks downloads 145 GB from the hub. The fetch runs in the trial's
process (network and disk bound, it needs no CPU of its own) into a scratch folder it removes;
a copy already in this machine's Hugging Face cache is used as it is.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from w2s_ray.artifacts import Artifact, Builder, Store
from w2s_ray.config import RungSpec, SweepConfig
from w2s_ray.models import rungs

VERSION = 1
#: what `from_pretrained` and vLLM read; other formats a repository may carry are skipped
FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"]


def cached_revision(model: str) -> str | None:
    """The commit `main` points at in this machine's Hugging Face cache, if it holds the repo."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


class RevisionError(ValueError):
    """A hub rung's revision can be neither read from the hub nor from the local cache."""


#: what the dry run keys a hub rung by when neither the hub nor the cache names its revision
UNPINNED = "unpinned"


def resolve_revision(rung: RungSpec) -> str:
    """The commit a hub rung's `main` points at now: asked of the hub, else this machine's cache."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return HfApi().model_info(rung.model, timeout=30).sha
    # offline (OSError), unreachable (httpx2), no such repo, gated, rate-limited: the cache may know
    except (OSError, httpx2.HTTPError, HfHubHTTPError) as err:
        cached = cached_revision(rung.model)
        if cached is None:
            raise RevisionError(f"ladder.rungs[{rung.name}].revision: {rung.model} has no revision set, "
                             f"the hub did not answer ({type(err).__name__}: {err}) and the local "
                             "Hugging Face cache does not hold it; set a commit sha") from None
        return cached


def planned_revision(rung: RungSpec) -> str:
    """The dry run's revision: as the run would pin it, or UNPINNED where it cannot tell yet."""
    try:
        return resolve_revision(rung)
    except RevisionError:
        return UNPINNED


def pin_revisions(config: SweepConfig, resolve: Callable[[RungSpec], str | None]) -> SweepConfig:
    """`config` with every hub rung's revision set (`resolve` for those left unset)."""
    pinned = [r.model_copy(update={"revision": resolve(r)}) if rungs.kind(r) == "hub" and r.revision is None
              else r for r in config.ladder.rungs]
    return config.model_copy(update={"ladder": config.ladder.model_copy(update={"rungs": pinned})})


def unprepared(config: SweepConfig) -> str | None:
    """Why `config` cannot start a sweep as it is, if so: its roots must be absolute (every Ray
    process has its own working directory) and every hub rung pinned (every trial then trains
    from the same commit). The driver prepares both once, before Ray starts (`load_config`,
    `pin_revisions`)."""
    if config.with_absolute_roots() != config:
        return "storage and data_dir must be absolute paths or URIs (config.load_config makes them so)"
    unpinned = [r.name for r in config.ladder.rungs if rungs.kind(r) == "hub" and r.revision is None]
    if unpinned:
        return f"hub rungs {unpinned} have no revision (fetch.pin_revisions pins them)"
    return None


def artifact(rung: RungSpec) -> Artifact:
    return Artifact.make("fetch", VERSION, [], {"model": rung.model, "revision": rung.revision})


def fetched(store: Store, builder: Builder, rung: RungSpec) -> Artifact:
    """The rung's pinned revision, committed in the store."""
    if rung.revision is None:
        raise ValueError(f"ladder.rungs[{rung.name}].revision: unset; the driver pins hub rungs "
                         "before a sweep starts (fetch.pin_revisions)")
    art = artifact(rung)

    def build(folder: str) -> dict:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        with tempfile.TemporaryDirectory(prefix="w2s-fetch-") as scratch:
            try:
                local = snapshot_download(rung.model, revision=rung.revision, allow_patterns=FILES,
                                          local_files_only=True)
            except LocalEntryNotFoundError:
                local = snapshot_download(rung.model, revision=rung.revision, allow_patterns=FILES,
                                          cache_dir=scratch)
            files = [p for p in Path(local).rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            store.upload_dir(local, folder)
        return {"model": rung.model, "revision": rung.revision, "files": len(files), "bytes": size}

    return builder.ensure(art, build, tag=rung.name)
