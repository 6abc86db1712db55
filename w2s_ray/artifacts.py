"""Content-addressed artifact store on a local path or a cloud URI.

An artifact's key is the sha256 of (stage, stage version, input keys, config subset). Its files
are written into a fresh attempt folder `<stage>/<key>/<attempt>/`; the build is committed by
writing `<stage>/<key>/COMMITTED.json`, which names the attempt, as one object. A build killed
before that marker leaves an attempt folder nobody reads. Object stores have no atomic rename of
folders, but a single object appears whole or not at all, which is all the marker needs.

Two trials that need the same artifact at the same time build it once: a named Ray actor leases
each key to one builder; the others wait for the marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from w2s_ray import node_cache

log = logging.getLogger(__name__)

MARKER = "COMMITTED.json"
LEASE_TTL_S = 120.0


@dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    # What it was built from, for the stage log's lineage; identity is (stage, key) alone.
    inputs: tuple[str, ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.key}"

    @staticmethod
    def make(stage: str, version: int, inputs: list[str], params: dict[str, Any]) -> Artifact:
        blob = json.dumps(
            {"stage": stage, "version": version, "inputs": inputs, "params": params},
            sort_keys=True,
            default=str,
        )
        return Artifact(stage, hashlib.sha256(blob.encode()).hexdigest()[:20], tuple(inputs))


def with_none(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns as object columns with None for a missing value: one missing-value type for
    an unparseable answer, in memory and through Parquet."""
    text = [c for c in df.columns if isinstance(df[c].dtype, pd.StringDtype)]
    return df.assign(**{c: df[c].astype(object).where(df[c].notna(), None) for c in text}) if text else df


def cache_dir() -> Path:
    """The per-machine cache (tiny ladder, local copies of remote artifacts)."""
    return Path(os.environ.get("W2S_RAY_CACHE", Path.home() / ".cache" / "w2s_ray"))


class Store:
    """Files under a root that pyarrow.fs understands: a local path, file://, s3://, gs://."""

    def __init__(self, root: str):
        self.root = root
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.base = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """A path inside the store, as `self.fs` addresses it."""
        return "/".join([self.base.rstrip("/"), *parts])

    def uri(self, *parts: str) -> str:
        """The same place as a URI or absolute path, for tools that open it themselves (Ray)."""
        root = self.root.rstrip("/") if not self.local or "://" in self.root else self.base
        return "/".join([root, *parts])

    # -- small files -------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def read_json(self, path: str) -> Any:
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes_atomic(path, json.dumps(obj, indent=1, default=str).encode())

    def write_table(self, path: str, df: pd.DataFrame) -> None:
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buffer)
        self.write_bytes_atomic(path, buffer.getvalue().to_pybytes())

    def read_table(self, path: str) -> pd.DataFrame:
        """The table, its text columns as Python strings with None where missing (pandas >= 3
        reads them as its string dtype, whose missing value is float NaN)."""
        return with_none(pq.read_table(path, filesystem=self.fs).to_pandas())

    def list_files(self, folder: str) -> list[str]:
        sel = pafs.FileSelector(folder, allow_not_found=True, recursive=False)
        return sorted(i.path for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    # -- folders -----------------------------------------------------------------------------
    def upload_dir(self, local: str | Path, dest: str) -> None:
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(local), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def local_dir(self, folder: str, weights: bool = True) -> str:
        """A local path holding `folder`: itself on a local store, else the node's cached copy
        (without weight files when `weights` is False)."""
        if self.local:
            return folder
        name = hashlib.sha256(f"{self.root}|{folder}".encode()).hexdigest()[:24]
        return str(node_cache.fetch(self.fs, folder, cache_dir() / "remote", name, weights))

    # -- artifacts ---------------------------------------------------------------------------
    def marker(self, art: Artifact) -> str:
        return self.path("artifacts", art.stage, art.key, MARKER)

    def committed(self, art: Artifact) -> bool:
        return self.exists(self.marker(art))

    def location(self, art: Artifact) -> str:
        """The committed attempt folder of an artifact."""
        meta = self.read_json(self.marker(art))
        return self.path("artifacts", art.stage, art.key, meta["attempt"])

    def new_attempt(self, art: Artifact) -> tuple[str, str]:
        attempt = f"attempt-{uuid.uuid4().hex[:12]}"
        folder = self.path("artifacts", art.stage, art.key, attempt)
        self.fs.create_dir(folder, recursive=True)
        return attempt, folder

    def commit(self, art: Artifact, attempt: str, meta: dict[str, Any]) -> None:
        self.write_json(self.marker(art), {"attempt": attempt, "committed_at": time.time(), **meta})


class LeaseBook:
    """Leases artifact keys to one builder at a time; a lease lapses unless renewed. A Ray actor
    (`lease_book`); Ray is imported on use, so reading a store (the dry run) never starts it."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str, float]] = {}

    def acquire(self, key: str, holder: str, ttl: float) -> bool:
        now = time.time()
        current = self.leases.get(key)
        if current is None or current[1] < now or current[0] == holder:
            self.leases[key] = (holder, now + ttl)
            return True
        return False

    def release(self, key: str, holder: str) -> None:
        if self.leases.get(key, ("", 0))[0] == holder:
            del self.leases[key]

    def held(self, prefix: str) -> list[tuple[str, str]]:
        """(key, holder) of the live leases whose holder starts with `prefix`, oldest first: a
        holder's last key is the stage it is building now (a build can lease its inputs)."""
        now = time.time()
        return [(key, holder) for key, (holder, expiry) in self.leases.items()
                if expiry >= now and holder.startswith(prefix)]


def lease_book(namespace_key: str):
    """The sweep's lease book, made by the driver on the driver's node (the head under `ray job
    submit`): a worker node that is lost must not take the leases with it. Trials get the same
    actor by name."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(LeaseBook).options(name=f"w2s-leases-{namespace_key}", get_if_exists=True,
                             lifetime="detached", scheduling_strategy=here).remote()


class StageLog:
    """Per-sweep record of stage executions, one small object per event (object stores can't append)."""

    def __init__(self, store: Store, sweep: str, run_id: str):
        self.store, self.sweep, self.run_id = store, sweep, run_id
        self.folder = store.path("sweeps", sweep, "stage_log")

    def building_folder(self) -> str:
        """Where work that runs before any stage (the tiny ladder's pretraining) reports its
        progress during this run, for the progress display."""
        return self.store.path("sweeps", self.sweep, "runs", self.run_id, "building")

    def record(self, art: Artifact, status: str, seconds: float, **extra: Any) -> None:
        event = {"run_id": self.run_id, "stage": art.stage, "key": art.key, "status": status,
                 "inputs": list(art.inputs), "seconds": round(seconds, 3), "time": time.time(), **extra}
        name = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}.json"
        self.store.write_json(f"{self.folder}/{name}", event)

    def frame(self) -> pd.DataFrame:
        rows = [self.store.read_json(p) for p in self.store.list_files(self.folder)]
        return pd.DataFrame(rows, columns=None if rows else ["run_id", "stage", "key", "status"])


@dataclass
class Builder:
    """Builds or reuses artifacts: the one entry point every stage goes through."""

    store: Store
    stage_log: StageLog
    leases: Any  # the LeaseBook actor
    holder: str
    poll_s: float = 1.0
    seen: set[str] = field(default_factory=set)
    #: an artifact `ensure` returns is committed and can be read (a dry run's builder: not)
    builds: bool = field(default=True, init=False)

    def ensure(self, art: Artifact, build: Callable[[str], dict[str, Any]], **log_extra: Any) -> Artifact:
        """Return `art`, committed; `build(folder)` writes its files and returns metadata."""
        if art.id in self.seen:  # already resolved by this builder: log each artifact once
            return art
        import ray

        waited = False
        while not self.store.committed(art):
            if ray.get(self.leases.acquire.remote(art.id, self.holder, LEASE_TTL_S)):
                try:
                    if self.store.committed(art):  # committed between our check and the lease
                        break
                    self._build(art, build, log_extra)
                    self.seen.add(art.id)
                    return art
                finally:
                    self.leases.release.remote(art.id, self.holder)
            if not waited:
                log.info("waiting for %s, leased to another trial", art.id)
                waited = True
            time.sleep(self.poll_s)
        self.stage_log.record(art, "reused", 0.0, **log_extra)
        self.seen.add(art.id)
        return art

    def _build(self, art: Artifact, build: Callable[[str], dict[str, Any]], log_extra: dict) -> None:
        attempt, folder = self.store.new_attempt(art)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(LEASE_TTL_S / 4):
                self.leases.acquire.remote(art.id, self.holder, LEASE_TTL_S)

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        start = time.time()
        try:
            meta = build(folder) or {}
        finally:
            stop.set()
        seconds = time.time() - start
        self.store.commit(art, attempt, {"seconds": seconds, **meta})
        self.stage_log.record(art, "built", seconds, compute_seconds=meta.get("compute_seconds"),
                              throughput=meta.get("throughput"), **log_extra)
        log.info("built %s in %.1fs", art.id, seconds)
