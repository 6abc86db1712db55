"""torch.distributed.checkpoint reads straight from the store, each rank only its own byte ranges
(and, with `train.checkpoint_to: store`, writes there without a copy on the node's disk).

Ray Train's `Checkpoint.as_directory()` downloads a whole remote checkpoint on every node before
anything is read: at 72B that is the model, its gradients' Adam moments and all, ~0.9 TB per node.
DCP already knows, from the checkpoint's metadata, which (file, offset, length) each rank's shards
live in; this reader serves exactly those ranges from the store's filesystem (ranged GETs on S3).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Generator
from contextlib import contextmanager

import pyarrow.fs as pafs
from torch.distributed.checkpoint.filesystem import (
    FileSystemBase,
    FileSystemReader,
    FileSystemWriter,
)
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata


class _StoreFS(FileSystemBase):
    """DCP's filesystem interface over a pyarrow filesystem: reads (`StoreReader`), and with
    `writes` the writes of `StoreWriter`."""

    def __init__(self, fs: pafs.FileSystem, writes: bool = False):
        self.fs, self.writes = fs, writes

    @contextmanager
    def create_stream(self, path: str | os.PathLike, mode: str) -> Generator:
        if mode == "rb":
            with self.fs.open_input_file(str(path)) as stream:
                yield stream
            return
        if mode != "wb" or not self.writes:
            raise ValueError(f"the store reader only reads, asked for mode {mode!r}")
        with self.fs.open_output_stream(str(path)) as stream:
            yield stream

    def concat_path(self, path: str | os.PathLike, suffix: str) -> str:
        return f"{str(path).rstrip('/')}/{suffix}"

    def init_path(self, path: str | os.PathLike, **kwargs) -> str:
        return str(path)

    def exists(self, path: str | os.PathLike) -> bool:
        return self.fs.get_file_info(str(path)).type != pafs.FileType.NotFound

    def rename(self, path, new_path) -> None:
        self._writable()
        self.fs.move(str(path), str(new_path))

    def mkdir(self, path) -> None:
        self._writable()
        self.fs.create_dir(str(path), recursive=True)

    def rm_file(self, path) -> None:
        self._writable()
        self.fs.delete_file(str(path))

    def _writable(self) -> None:
        if not self.writes:
            raise NotImplementedError("read only")

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return isinstance(checkpoint_id, str)


class StoreReader(FileSystemReader):
    """A DCP storage reader on `fs`. `requested` counts the bytes asked of each file, split into
    sharded tensors (`<file>`) and entries every rank holds whole (`<file> (replicated)`: DCP
    stores those once, in whichever rank's file its save plan chose, e.g. Adam's step counts)."""

    def __init__(self, fs: pafs.FileSystem, path: str):
        super().__init__(path)
        self.fs = _StoreFS(fs)
        self.path = path
        self.requested: Counter[str] = Counter()
        self.sharded: set[str] = set()

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args, **kwargs):
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)
        self.sharded = {fqn for fqn, md in metadata.state_dict_metadata.items()
                        if isinstance(md, TensorStorageMetadata) and len(md.chunks) > 1}

    def read_data(self, plan, planner):
        for item in plan.items:
            info = self.storage_data[item.storage_index]
            kind = "" if item.storage_index.fqn in self.sharded else " (replicated)"
            self.requested[info.relative_path + kind] += info.length
        return super().read_data(plan, planner)


class StoreWriter(FileSystemWriter):
    """A DCP storage writer straight into the store (`train.checkpoint_to: store`): each rank
    streams its shards to `fs` with no copy on the node's disk. Syncing is the store's (an
    object store's PUT is durable once it returns; pyarrow's streams have no file descriptor)."""

    def __init__(self, fs: pafs.FileSystem, path: str):
        super().__init__(path, sync_files=False)
        self.fs = _StoreFS(fs, writes=True)
        self.path = path
