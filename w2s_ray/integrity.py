"""What a committed artifact's files were, and the checks made against it.

A commit record lists every file of the artifact with its size and sha256 (`content`). The
digests are computed once, where the bytes are: a folder uploaded from local disk is hashed
there (`Store.upload_dir` leaves them beside the files, in a `DIGESTS` file the commit folds
in), anything else is read back once when the artifact is committed. Readers then check sizes
(one listing), a node's copy checks the digests as it lands, and a local checkpoint is named by
its files' digests, each remembered while the file's size and mtime stay the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

#: files a writer leaves beside what it wrote: {relative path: {size, sha256}}; not content
DIGESTS = ".digests-"
BLOCK = 8 << 20
#: hashlib releases the GIL on large blocks: several files hash at once on a many-core node
HASH_THREADS = 8


class DamagedArtifact(RuntimeError):
    """A committed artifact's files differ from its commit record: it is never read as complete."""


def sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def local_digests(folder: str | Path) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of every file under a local folder."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        digests = list(pool.map(sha256_file, files))
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": d}
            for p, d in zip(files, digests, strict=True)}


def differences(expected: dict[str, dict[str, Any]], sizes: dict[str, int]) -> list[str]:
    """How the files found (`sizes`, by relative path) differ from a commit record's."""
    problems = []
    for rel, record in sorted(expected.items()):
        if rel not in sizes:
            problems.append(f"{rel} is missing")
        elif sizes[rel] != record["size"]:
            problems.append(f"{rel} is {sizes[rel]:,} bytes, committed with {record['size']:,}")
    return problems


def damaged(what: str, problems: list[str], remedy: str) -> DamagedArtifact:
    return DamagedArtifact(f"{what} is damaged: {'; '.join(problems)}. It is not read. {remedy}")


class DigestCache:
    """sha256 of local files, remembered on disk while a file's size, mtime and inode stay the
    same: a 145 GB checkpoint given as a path is read once per machine, not once per process
    that keys it (every trial and the dry run do)."""

    _lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = path

    def _load(self) -> dict[str, list]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # none yet, or a torn write: rehash
            return {}

    def digest(self, file: Path) -> str:
        return self.digests([file])[0]

    def digests(self, files: list[Path]) -> list[str]:
        with self._lock:
            known = self._load()
            stamps = {}
            for f in files:
                st = f.stat()
                stamps[f] = [st.st_size, st.st_mtime_ns, st.st_ino]
            todo = [f for f in files if known.get(str(f.resolve()), [None])[:3] != stamps[f]]
            with ThreadPoolExecutor(HASH_THREADS) as pool:
                for f, d in zip(todo, pool.map(sha256_file, todo), strict=True):
                    known[str(f.resolve())] = [*stamps[f], d]
            if todo:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(known))
                os.replace(tmp, self.path)  # a concurrent writer's update may be lost: rehashed later
            return [known[str(f.resolve())][3] for f in files]


def folder_digest(folder: Path, cache: DigestCache) -> str:
    """One digest of a local folder's files (relative paths and contents; hidden files left out),
    whatever the folder is called or where it lies."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    lines = [f"{p.relative_to(folder).as_posix()} {d}" for p, d in zip(files, cache.digests(files), strict=True)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:20]
