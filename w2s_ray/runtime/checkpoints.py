"""Resumable training checkpoints through Ray Train: torch.distributed.checkpoint (DCP) folders.

Each rank writes only its own shards (`__<rank>_0.distcp`), Ray Train uploads every rank's files
into one checkpoint folder of the run, and a restarted run reads it back with
`ray.train.get_checkpoint()`, each rank its own shards straight from the store. The training
loop (`trainer.optimize`) sees only `restore` and `save`, so it runs without Ray where nothing
resumes (the GPU check).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from w2s_ray.runtime.shard_reader import StoreReader, StoreWriter

PROGRESS = "progress.json"


class RayTrainCheckpoints:
    """What `trainer.optimize` calls to resume a run and to report its progress. `to`: "local"
    stages each rank's shards on the node's disk for Ray Train to upload, "store" streams them
    straight into the run's folder of the store (`train.checkpoint_to`)."""

    def __init__(self, to: str = "local"):
        self.to = to

    def save(self, model, opt, sched, progress: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Every rank writes its shards and reports them; Ray Train keeps the latest checkpoint."""
        model_sd, optim_sd = get_state_dict(model, opt)
        if self.to == "store":
            self._save_to_store({"model": model_sd, "optim": optim_sd}, sched, progress, metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
            if ray.train.get_context().get_world_rank() == 0:
                Path(tmp, PROGRESS).write_text(json.dumps({**progress, "sched": sched.state_dict()}))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    @staticmethod
    def _save_to_store(state: dict[str, Any], sched, progress: dict[str, Any], metrics: dict[str, Any]) -> None:
        """The shards written where Ray Train keeps the run's checkpoints, reported without an upload."""
        context = ray.train.get_context()
        storage = context.get_storage()  # a DeveloperAPI: the run's folder and filesystem
        name = f"checkpoint-step-{progress['step']:09d}"
        path = storage.build_checkpoint_path_from_name(name)
        fs = storage.storage_filesystem
        dcp.save(state, storage_writer=StoreWriter(fs, path))
        if context.get_world_rank() == 0:
            with fs.open_output_stream(f"{path}/{PROGRESS}") as f:
                f.write(json.dumps({**progress, "sched": sched.state_dict()}).encode())
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # progress.json is in place before any rank reports
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint(path, filesystem=fs), checkpoint_dir_name=name,
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD)

    def restore(self, model, opt, sched) -> dict[str, Any] | None:
        """Load the run's latest checkpoint, if a previous attempt of this run reported one;
        `resume_reads` says what every rank read."""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        model_sd, optim_sd = get_state_dict(model, opt)
        state = {"model": model_sd, "optim": optim_sd}
        reader = StoreReader(checkpoint.filesystem, checkpoint.path)
        dcp.load(state, storage_reader=reader)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{PROGRESS}") as f:
            progress = json.loads(f.read())
        sched.load_state_dict(progress.pop("sched"))
        reads = [dict(reader.requested)]
        if torch.distributed.is_initialized():
            reads = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(reads, dict(reader.requested))
        return {**progress, "resume_reads": reads}
