"""Content-addressed artifact store on a local path or a cloud URI.

An artifact's key is the sha256 of (stage, stage version, input keys, config subset). Its files
are written into a fresh attempt folder `<stage>/<key>/<attempt>/`; the build is committed by
writing `<stage>/<key>/COMMITTED.json`, which names the attempt, as one object. A build killed
before that marker leaves an attempt folder nobody reads. Object stores have no atomic rename of
folders, but a single object appears whole or not at all, which is all the marker needs.

The marker also records every file's size and sha256 (`content`, `w2s_ray/integrity.py`). A
committed artifact whose files no longer match (a table cut short, a model file altered) is
reported by stage and key and never read: `location` checks the sizes (and re-hashes a file whose
mtime changed), a node's copy checks the digests. Markers written before `content` existed are
read as before.

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

from w2s_ray import integrity, node_cache
from w2s_ray.integrity import DamagedArtifact

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
        self._checked: set[tuple[str, str]] = set()

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
        try:
            table = pq.read_table(path, filesystem=self.fs)
        except pa.ArrowInvalid as err:  # cut short or overwritten (under a marker without `content`)
            raise DamagedArtifact(
                f"{path} is not a readable Parquet table ({str(err).splitlines()[0]}). If it belongs to a "
                f"committed artifact, delete that artifact's {MARKER} and run again to rebuild it") from None
        return with_none(table.to_pandas())

    def list_files(self, folder: str) -> list[str]:
        sel = pafs.FileSelector(folder, allow_not_found=True, recursive=False)
        return sorted(i.path for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    # -- folders -----------------------------------------------------------------------------
    def upload_dir(self, local: str | Path, dest: str) -> None:
        """Copy a local folder into `dest`, with its files' digests hashed here, from local disk,
        for the commit record (a commit would otherwise read them back from the store)."""
        digests = integrity.local_digests(local)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(local), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        self.write_json(f"{dest}/{integrity.DIGESTS}{uuid.uuid4().hex[:8]}.json", digests)

    def local_dir(self, folder: str, weights: bool = True) -> str:
        """A local path holding `folder`: itself on a local store, else the node's cached copy
        (without weight files when `weights` is False)."""
        if self.local:
            return folder
        name = hashlib.sha256(f"{self.root}|{folder}".encode()).hexdigest()[:24]
        stage_key, attempt = folder.rsplit("/", 1)
        marker = f"{stage_key}/{MARKER}"
        record = self.read_json(marker) if self.exists(marker) else {}
        expected = record.get("content") if record.get("attempt") == attempt else None
        what = "/".join(stage_key.rsplit("/", 2)[-2:])
        return str(node_cache.fetch(self.fs, folder, cache_dir() / "remote", name, weights, expected,
                                    what, self._remedy(marker, attempt)))

    # -- artifacts ---------------------------------------------------------------------------
    def marker(self, art: Artifact) -> str:
        return self.path("artifacts", art.stage, art.key, MARKER)

    def committed(self, art: Artifact) -> bool:
        return self.exists(self.marker(art))

    def location(self, art: Artifact) -> str:
        """The committed attempt folder of an artifact, its files checked against the commit
        record (once per process): DamagedArtifact if they differ."""
        meta = self.read_json(self.marker(art))
        folder = self.path("artifacts", art.stage, art.key, meta["attempt"])
        if (art.id, meta["attempt"]) not in self._checked and "content" in meta:
            self._check(art, folder, meta)
            self._checked.add((art.id, meta["attempt"]))
        return folder

    def _check(self, art: Artifact, folder: str, meta: dict[str, Any]) -> None:
        found = self._listing(folder)
        expected = meta["content"]
        problems = integrity.differences(expected, {rel: info.size for rel, info in found.items()})
        for rel, record in sorted(expected.items()):
            info = found.get(rel)
            # Same size, new mtime: rewritten in place; only its bytes can tell.
            if info is not None and info.size == record["size"] and record.get("mtime_ns") is not None \
                    and info.mtime_ns != record["mtime_ns"]:
                with self.fs.open_input_stream(info.path) as f:
                    digest = integrity.sha256_stream(f)
                if digest != record["sha256"]:
                    problems.append(f"{rel} was rewritten after the commit and its content differs "
                                    f"(sha256 {digest[:12]}, committed {record['sha256'][:12]})")
        if problems:
            raise integrity.damaged(art.id, problems, self._remedy(self.marker(art), meta["attempt"]))

    def _remedy(self, marker: str, attempt: str) -> str:
        return (f"To rebuild it, delete {marker} and run again (the damaged files stay in {attempt} "
                "for inspection; what was built from it stays committed)")

    def _listing(self, folder: str) -> dict[str, pafs.FileInfo]:
        """The files of a folder by relative path (the writers' digest files left out)."""
        prefix = folder.rstrip("/") + "/"
        infos = self.fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        return {i.path[len(prefix):]: i for i in infos
                if i.type == pafs.FileType.File and not i.base_name.startswith(integrity.DIGESTS)}

    def content(self, folder: str) -> dict[str, dict[str, Any]]:
        """{relative path: {size, sha256, mtime_ns}} of an attempt's files, for its commit record:
        digests from the writers' digest files where they match, else read back once."""
        found = self._listing(folder)
        known: dict[str, dict[str, Any]] = {}
        sel = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        sidecars = [i.path for i in self.fs.get_file_info(sel) if i.base_name.startswith(integrity.DIGESTS)]
        prefix = folder.rstrip("/") + "/"
        for sidecar in sidecars:
            where = sidecar.rsplit("/", 1)[0] + "/"
            for rel, record in self.read_json(sidecar).items():
                known[(where + rel)[len(prefix):]] = record
        out = {}
        for rel, info in sorted(found.items()):
            record = known.get(rel)
            if record is None or record["size"] != info.size:
                with self.fs.open_input_stream(info.path) as f:
                    record = {"size": info.size, "sha256": integrity.sha256_stream(f)}
            out[rel] = {"size": info.size, "sha256": record["sha256"], "mtime_ns": info.mtime_ns}
        for sidecar in sidecars:  # folded into the record
            self.fs.delete_file(sidecar)
        return out

    def new_attempt(self, art: Artifact) -> tuple[str, str]:
        attempt = f"attempt-{uuid.uuid4().hex[:12]}"
        folder = self.path("artifacts", art.stage, art.key, attempt)
        self.fs.create_dir(folder, recursive=True)
        return attempt, folder

    def commit(self, art: Artifact, attempt: str, meta: dict[str, Any]) -> None:
        content = self.content(self.path("artifacts", art.stage, art.key, attempt))
        self.write_json(self.marker(art), {"attempt": attempt, "committed_at": time.time(), **meta,
                                           "content": content})


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
