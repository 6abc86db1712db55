"""Node-local copies of artifacts kept in a remote store (S3, GCS): the only way a model reaches a
node. The store is what nodes share; this cache is only a cache:

- one download per (node, artifact): a file lock makes the other processes of the node wait for
  the first and then read its copy;
- concurrent: boto3's transfer manager fetches several files at once and big files in ranged
  parts at once (S3; other stores: several files at once through pyarrow);
- never a partial copy, and no byte fetched twice: files go to a `.tmp-partial` folder that is
  renamed into place whole; a downloader killed mid-copy leaves that folder, whose complete files
  (by size) the next holder of the lock keeps, fetching only the rest (the lock dies with its
  process, so a held lock means a live downloader);
- checked: given the commit record's files, sizes are compared before the copy and sha256
  digests after it, and a difference is a DamagedArtifact, never a copy that reads as complete;
- bounded: past `W2S_RAY_CACHE_GB` (default: half of the cache's disk) the least recently used
  copies go, except those used in the last `IN_USE_S` seconds, which a process may still be
  loading from.

Each download is appended to `downloads.jsonl` in the cache folder, which is how a run (or a test)
sees which node fetched what.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from filelock import FileLock, Timeout

from w2s_ray import integrity

log = logging.getLogger(__name__)

#: Files that hold weights; a process that never reads weights (an FSDP rank that receives its
#: shards from rank 0) copies everything else: config, tokenizer, metrics.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".distcp")
IN_USE_S = 600.0
DOWNLOADS = "downloads.jsonl"
#: a copy in progress: kept across a killed copy, whose complete files the next one keeps
PARTIAL = ".tmp-partial"
#: requests at once, the size of a ranged part, and how many bytes of files may be in flight
CONCURRENCY = 16
PART_BYTES = 64 << 20
WINDOW_BYTES = 2 << 30


def budget_bytes(folder: Path) -> int:
    gb = os.environ.get("W2S_RAY_CACHE_GB")
    if gb:
        try:
            return int(float(gb) * 1e9)
        except ValueError:
            raise ValueError(f"W2S_RAY_CACHE_GB: expected a number of GB, got {gb!r}") from None
    return shutil.disk_usage(folder).total // 2


def fetch(fs: pafs.FileSystem, source: str, folder: Path, name: str, weights: bool = True,
          expected: dict[str, dict[str, Any]] | None = None, what: str | None = None,
          remedy: str = "") -> Path:
    """`source` (a folder on `fs`) as a local folder `folder/name`, downloaded at most once.
    `expected` (a commit record's files) is checked: sizes before anything is fetched, digests
    as the copy lands; a difference raises DamagedArtifact naming `what`, with `remedy`."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name if weights else f"{name}-noweights"
    target = folder / name
    with FileLock(folder / f"{name}.lock"):
        if not target.exists():
            for stale in folder.glob(f"{name}.tmp-*"):  # an earlier version's partial copies
                if stale.name != f"{name}{PARTIAL}":
                    shutil.rmtree(stale, ignore_errors=True)
            partial = folder / f"{name}{PARTIAL}"
            start = time.time()
            fetched, kept = _copy(fs, source, partial, weights, expected, what or source, remedy)
            partial.rename(target)
            _record(folder, {"source": source, "entry": name, "bytes": fetched, "kept_bytes": kept,
                             "seconds": round(time.time() - start, 3)})
        os.utime(target)  # the entry's mtime is its last use, for eviction
    evict(folder, keep=target)
    return target


def _copy(fs: pafs.FileSystem, source: str, dest: Path, weights: bool,
          expected: dict[str, dict[str, Any]] | None, what: str, remedy: str) -> tuple[int, int]:
    """Copy what `dest` lacks; returns (bytes fetched now, bytes kept from a killed copy)."""
    prefix = source.rstrip("/") + "/"
    sizes = {info.path[len(prefix):]: info.size
             for info in fs.get_file_info(pafs.FileSelector(source, recursive=True))
             if info.type == pafs.FileType.File and not info.base_name.startswith(integrity.DIGESTS)}
    if expected is not None:
        problems = integrity.differences(expected, sizes)
        if problems:
            raise integrity.damaged(what, problems, remedy)
    wanted = {rel: size for rel, size in sizes.items() if weights or not rel.endswith(WEIGHT_SUFFIXES)}
    dest.mkdir(parents=True, exist_ok=True)
    done = {rel for rel, size in wanted.items() if (dest / rel).is_file() and (dest / rel).stat().st_size == size}
    for stray in [p for p in dest.rglob("*") if p.is_file()]:  # a killed transfer's temporary file
        if stray.relative_to(dest).as_posix() not in done:
            stray.unlink()
    missing = [(rel, wanted[rel]) for rel in sorted(wanted) if rel not in done]
    if isinstance(fs, pafs.S3FileSystem):
        _download_s3(fs, prefix, missing, dest)
    else:
        _download_files(fs, prefix, missing, dest)
    if expected is not None:
        _check_digests(dest, wanted, expected, what, remedy)
    return sum(s for _, s in missing), sum(wanted[rel] for rel in done)


def _download_s3(fs: pafs.S3FileSystem, prefix: str, files: list[tuple[str, int]], dest: Path) -> None:
    """boto3's transfer manager: several files at once, each big file in ranged parts at once.
    Files start in order while at most WINDOW_BYTES are in flight, so a copy killed half-way
    loses at most that much (a part-written file is a temporary file, removed on resume)."""
    if not files:
        return
    import boto3
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from s3transfer.subscribers import BaseSubscriber

    class KnownSize(BaseSubscriber):  # the listing's size: no HEAD request per file
        def __init__(self, size: int):
            self.size = size

        def on_queued(self, future, **kwargs):
            future.meta.provide_transfer_size(self.size)

    # The endpoint comes from AWS_ENDPOINT_URL as for pyarrow (MinIO, R2, a local server).
    client = boto3.client("s3", region_name=fs.region or None)
    config = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES,
                            max_concurrency=CONCURRENCY, preferred_transfer_client="classic")
    pending: deque = deque()
    in_flight = 0
    with create_transfer_manager(client, config) as manager:
        for rel, size in files:
            while pending and in_flight + size > WINDOW_BYTES:
                future, done_size = pending.popleft()
                future.result()
                in_flight -= done_size
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            bucket, key = (prefix + rel).split("/", 1)
            pending.append((manager.download(bucket, key, str(out), subscribers=[KnownSize(size)]), size))
            in_flight += size
        for future, _ in pending:
            future.result()


def _download_files(fs: pafs.FileSystem, prefix: str, files: list[tuple[str, int]], dest: Path) -> None:
    """Other stores (GCS): several files at once through pyarrow, one stream each."""

    def one(rel: str) -> None:
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{uuid.uuid4().hex[:8]}")
        pafs.copy_files(prefix + rel, str(tmp), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        tmp.rename(out)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, [rel for rel, _ in files]))


def _check_digests(dest: Path, wanted: dict[str, int], expected: dict[str, dict[str, Any]],
                   what: str, remedy: str) -> None:
    rels = [rel for rel in sorted(wanted) if expected.get(rel, {}).get("sha256")]
    with ThreadPoolExecutor(integrity.HASH_THREADS) as pool:
        found = dict(zip(rels, pool.map(integrity.sha256_file, [dest / r for r in rels]), strict=True))
    bad = [rel for rel in rels if found[rel] != expected[rel]["sha256"]]
    for rel in bad:  # not kept for a resumed copy: it would be taken as complete by its size
        (dest / rel).unlink()
    if bad:
        raise integrity.damaged(what, [f"{rel}'s content differs from its commit (sha256 "
                                       f"{found[rel][:12]}, committed {expected[rel]['sha256'][:12]})"
                                       for rel in bad], remedy)


def _record(folder: Path, event: dict) -> None:
    event = {"time": time.time(), "node": socket.gethostname(), "pid": os.getpid(), **event}
    with open(folder / DOWNLOADS, "a") as f:  # one short line per write: appends stay whole
        f.write(json.dumps(event) + "\n")


def downloads(folder: Path) -> list[dict]:
    path = folder / DOWNLOADS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def evict(folder: Path, keep: Path) -> list[Path]:
    """Remove least recently used entries until the folder fits its budget; returns them."""
    used, sizes = {}, {}
    for entry in folder.iterdir():
        if entry.is_dir():  # a partial copy counts too: an abandoned one is evicted like the rest
            try:
                used[entry], sizes[entry] = entry.stat().st_mtime, _size(entry)
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
    total, budget = sum(sizes.values()), budget_bytes(folder)
    removed = []
    for entry in sorted(used, key=used.get):
        if total <= budget:
            break
        if entry == keep or time.time() - used[entry] < IN_USE_S:
            continue
        try:
            with FileLock(folder / f"{entry.name.split('.tmp-')[0]}.lock", timeout=0):
                shutil.rmtree(entry)
        except Timeout:  # being downloaded again right now
            continue
        total -= sizes[entry]
        removed.append(entry)
        log.info("node cache over budget: evicted %s (%.1f MB)", entry.name, sizes[entry] / 1e6)
    if total > budget:
        log.warning("node cache holds %.1f GB over its %.1f GB budget (W2S_RAY_CACHE_GB): every "
                    "entry is in use", total / 1e9, budget / 1e9)
    return removed
