"""Hub checkpoints into the store, once per (model, revision), before any stage needs them.

A hub rung is fetched by a stage of its own: a trained model's key names the exact revision it
started from (a hub repository's `main` moves), every node then reads the weights from the store
through its node cache like any trained model, and no training process group waits in a
collective while one of its ranks downloads 145 GB from the hub.

The download runs as a Ray task on a GPU node (`runtime.nodes`), never in the trial's process:
trials start on the CPU head, whose disk and network would otherwise carry every base model. It
first checks that the node's scratch disk holds the snapshot (sizes from the hub's file listing)
and stops before downloading when it does not; then it fetches one file at a time into the
scratch folder, puts it in the store and deletes it. A copy already in the node's Hugging Face
cache is put in the store as it is.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

from w2s_ray import integrity
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


class DiskSpaceError(OSError):
    """A hub snapshot does not fit on the disk of the node that would download it."""


def hub_files(model: str, revision: str) -> list[tuple[str, int]]:
    """(file, bytes) of FILES at `revision`, from the hub's listing: nothing is downloaded."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    info = HfApi().model_info(model, revision=revision, files_metadata=True, timeout=30)
    wanted = filter_repo_objects(info.siblings or [], allow_patterns=FILES, key=lambda f: f.rfilename)
    return [(f.rfilename, f.size or 0) for f in wanted]


def check_space(model: str, revision: str, need: int, folder: str) -> None:
    """Stop before downloading when `folder`'s disk has less free than the snapshot's `need`
    bytes: one file at a time passes through it, and the node's cache holds the whole model when
    a stage here loads it."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DiskSpaceError(f"fetch of {model}@{revision[:12]} on {socket.gethostname()}: the snapshot needs "
                             f"{need:,} bytes ({need / 1e9:.1f} GB) and {folder} has {free:,} bytes "
                             f"({free / 1e9:.1f} GB) free: free space there, or point TMPDIR at a "
                             "larger disk on the GPU nodes")


def download(store: Store, model: str, revision: str, folder: str) -> dict:
    """The snapshot of `model` at `revision` into the store's `folder`, file by file; run on the
    node that downloads (`fetched` places it)."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    meta = {"model": model, "revision": revision, "node": socket.gethostname()}
    try:
        local = Path(snapshot_download(model, revision=revision, allow_patterns=FILES, local_files_only=True))
        files = [p for p in local.rglob("*") if p.is_file()]
        store.upload_dir(local, folder)
        return {**meta, "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    except LocalEntryNotFoundError:
        pass
    listing = hub_files(model, revision)
    scratch_root = tempfile.gettempdir()
    check_space(model, revision, sum(size for _, size in listing), scratch_root)
    digests = {}
    with tempfile.TemporaryDirectory(prefix="w2s-fetch-", dir=scratch_root) as scratch:
        for name, _ in listing:
            path = Path(hf_hub_download(model, name, revision=revision, local_dir=scratch))
            # hashed here, from local disk: the commit would otherwise read the upload back
            digests[name] = {"size": path.stat().st_size, "sha256": integrity.sha256_file(path)}
            dest = f"{folder}/{name}"
            store.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(path), dest, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=store.fs)
            os.remove(path)
    store.write_json(f"{folder}/{integrity.DIGESTS}{uuid.uuid4().hex[:8]}.json", digests)
    return {**meta, "files": len(listing), "bytes": sum(d["size"] for d in digests.values())}


def fetched(store: Store, builder: Builder, rung: RungSpec) -> Artifact:
    """The rung's pinned revision, committed in the store."""
    if rung.revision is None:
        raise ValueError(f"ladder.rungs[{rung.name}].revision: unset; the driver pins hub rungs "
                         "before a sweep starts (fetch.pin_revisions)")
    art = artifact(rung)

    def build(folder: str) -> dict:
        import ray

        from w2s_ray.runtime import nodes

        task = ray.remote(download).options(**nodes.on_gpu_node())
        return ray.get(task.remote(store, rung.model, rung.revision, folder))

    return builder.ensure(art, build, tag=rung.name)
