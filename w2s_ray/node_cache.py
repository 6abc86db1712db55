"""Node-local copies of artifacts kept in a remote store (S3, GCS): the only way a model reaches a
node. The store is what nodes share; this cache is only a cache:

- one download per (node, artifact): a file lock makes the other processes of the node wait for
  the first and then read its copy;
- never a partial copy: files go to a temporary folder that is renamed into place whole; a
  downloader killed mid-copy leaves only that temporary folder, which the next holder of the lock
  removes (the lock dies with its process, so a held lock means a live downloader);
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
from pathlib import Path

import pyarrow.fs as pafs
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

#: Files that hold weights; a process that never reads weights (an FSDP rank that receives its
#: shards from rank 0) copies everything else: config, tokenizer, metrics.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".distcp")
IN_USE_S = 600.0
DOWNLOADS = "downloads.jsonl"


def budget_bytes(folder: Path) -> int:
    gb = os.environ.get("W2S_RAY_CACHE_GB")
    if gb:
        try:
            return int(float(gb) * 1e9)
        except ValueError:
            raise ValueError(f"W2S_RAY_CACHE_GB: expected a number of GB, got {gb!r}") from None
    return shutil.disk_usage(folder).total // 2


def fetch(fs: pafs.FileSystem, source: str, folder: Path, name: str, weights: bool = True) -> Path:
    """`source` (a folder on `fs`) as a local folder `folder/name`, downloaded at most once."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name if weights else f"{name}-noweights"
    target = folder / name
    with FileLock(folder / f"{name}.lock"):
        if not target.exists():
            for stale in folder.glob(f"{name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = folder / f"{name}.tmp-{uuid.uuid4().hex[:8]}"
            start = time.time()
            nbytes = _copy(fs, source, tmp, weights)
            tmp.rename(target)
            _record(folder, {"source": source, "entry": name, "bytes": nbytes,
                             "seconds": round(time.time() - start, 3)})
        os.utime(target)  # the entry's mtime is its last use, for eviction
    evict(folder, keep=target)
    return target


def _copy(fs: pafs.FileSystem, source: str, dest: Path, weights: bool) -> int:
    infos = fs.get_file_info(pafs.FileSelector(source, recursive=True))
    total = 0
    for info in infos:
        if info.type != pafs.FileType.File or (not weights and info.path.endswith(WEIGHT_SUFFIXES)):
            continue
        out = dest / info.path[len(source.rstrip("/")) + 1:]
        out.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
        total += info.size
    dest.mkdir(parents=True, exist_ok=True)  # an empty source is still a (complete) copy
    return total


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
        if entry.is_dir() and ".tmp-" not in entry.name:
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
            with FileLock(folder / f"{entry.name}.lock", timeout=0):
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
