"""Fine-tuning through Ray Train's TorchTrainer: the worker loop around `trainer.optimize`.

`train.num_workers: 0` runs Ray Train's local mode: the same `ray.train` API without a worker
group, in a Ray task that holds `cpus_per_worker` CPUs (a task, not the trial's own process,
because Ray refuses `ray.train` calls inside a Tune session). On this 2-core machine that removes
most of Ray Train's fixed cost per `fit()` (controller, worker-group start, polling; measured in
benchmarks/overhead.py), which the tiny sweep pays dozens of times. `num_workers >= 1` runs a
worker group, DDP or FSDP (`parallel.py`), that checkpoints as it goes and resumes a run of the
same name after the driver died.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.torch.config import _TorchBackend
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from w2s_ray.artifacts import Store
from w2s_ray.config import TrainHParams
from w2s_ray.models.location import ModelLocation
from w2s_ray.models.tokenizer import load_tokenizer, save_checkpoint, tokenizer_path
from w2s_ray.runtime import engines, parallel
from w2s_ray.runtime.checkpoints import RayTrainCheckpoints
from w2s_ray.runtime.trainer import optimize, toward_base

OWN_RESOURCES = PlacementGroupSchedulingStrategy(placement_group=None)
#: the file of a trained model's folder that holds what its training run measured
METRICS = "train_metrics.json"
#: beside a run's checkpoints: what its out-of-memory error measured, and under which layout
OOM_MARKER = "OUT_OF_MEMORY.json"
#: the fields that lay a run out (an out-of-memory error is a property of these)
LAYOUT_FIELDS = {"num_workers", "use_gpu", "strategy", "grad_accum", "activation_checkpointing",
                 "mixed_precision", "max_length", "batch_size"}


def anchor_weights(task, anchor: ModelLocation | None, model) -> dict[str, torch.Tensor]:
    """The weights averaging moves back toward: the loaded base's, or the `anchor` model's."""
    if anchor is None:
        return {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters()}
    loaded = task.load(anchor.local())
    prefix = "module." if hasattr(model, "module") else ""  # DDP's names
    return {prefix + k: p.detach() for k, p in loaded.named_parameters()}


class StageOutOfMemory(RuntimeError):
    """A training run ran out of GPU memory: deterministic for its layout, so never retried."""


def layout_of_run(hp: TrainHParams) -> dict[str, Any]:
    return hp.model_dump(include=LAYOUT_FIELDS)


def out_of_memory(store: Store, marker: str, hp: TrainHParams) -> dict[str, Any] | None:
    """What an earlier attempt of this run recorded when it ran out of memory with this very
    layout (a new layout tries afresh)."""
    if not store.exists(marker):
        return None
    record = store.read_json(marker)
    return record if record["layout"] == layout_of_run(hp) else None


def train_loop(cfg: dict[str, Any]) -> None:
    task, base = cfg["task"], cfg["model"]
    tc = ray.train.get_context()
    rank, world = tc.get_world_rank(), tc.get_world_size()
    hp = TrainHParams(**cfg["hp"])
    store = Store(base.root)
    # Ray Train retries a failed worker group; an out-of-memory error would only recur, after
    # reloading the model on every GPU of the gang: the retry ends here instead.
    if out_of_memory(store, cfg["oom_marker"], hp) is not None:
        raise StageOutOfMemory("an earlier attempt of this run with this layout ran out of GPU memory")
    torch.set_num_threads(hp.torch_threads)
    torch.manual_seed(cfg["seed"])
    dev = ray.train.torch.get_device() if hp.use_gpu or world > 1 else torch.device("cpu")
    path = base.local(weights=parallel.reads_weights(hp, rank, world))
    tok = load_tokenizer(path)
    model = parallel.load(task, path, hp, rank, world, dev)
    df = store.read_table(cfg["data"])
    averaged = anchor_weights(task, cfg["anchor"], model) if hp.toward_base else None
    # Local mode (num_workers 0) keeps no checkpoint Ray could restore, so it writes none.
    try:
        metrics = optimize(model, task.buckets(tok, df, hp), hp, cfg["seed"], rank, world, task,
                           checkpoints=RayTrainCheckpoints(hp.checkpoint_to) if hp.num_workers > 0 else None, dev=dev)
    except torch.OutOfMemoryError as err:
        cuda = dev.type == "cuda"
        store.write_json(cfg["oom_marker"], {
            "rank": rank, "layout": layout_of_run(hp), "error": str(err).splitlines()[0],
            "peak_allocated_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if cuda else None,
            "reserved_gb": torch.cuda.memory_reserved(dev) / 1e9 if cuda else None})
        raise
    if averaged is not None:
        toward_base(model, averaged, hp.toward_base)
    metrics["lengths"] = task.lengths(tok, df, hp)
    # FSDP's parameters are DTensors, whose numel is the whole tensor's, not this rank's shard.
    metrics["params"] = sum(p.numel() for p in model.parameters())
    metrics["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    metrics["devices"] = world
    # Gathering the full weights is a collective (FSDP): every rank takes part, rank 0 saves.
    weights = parallel.full_state_dict(model, hp, world)
    if rank == 0:
        trained = model.module if hasattr(model, "module") else model
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(trained, tok, tmp, own_subfolder=tokenizer_path(path) != path,
                            state_dict=weights)
            with open(f"{tmp}/{METRICS}", "w") as f:
                json.dump(metrics, f)
            store.upload_dir(tmp, cfg["out"])
    ray.train.report({k: v for k, v in metrics.items() if k not in ("losses", "lengths")})


def node_copies(cfg: dict[str, Any], rank: int, world: int) -> None:
    """The models this rank reads, in its node's cache: the node's first rank copies them while
    the others wait on the cache's file lock."""
    hp = TrainHParams(**cfg["hp"])
    cfg["model"].local(weights=parallel.reads_weights(hp, rank, world))
    if hp.toward_base and cfg["anchor"] is not None:
        cfg["anchor"].local()


class _CopiesFirst(_TorchBackend):
    """Torch's backend (as Ray's own torchft backend extends it) that has every worker copy its
    models to its node before the process group starts: no rank waits for a download inside a
    collective, under the process group's timeout."""

    def on_start(self, worker_group, backend_config: CopiesFirstConfig) -> None:
        n = len(worker_group)
        ray.get([worker_group.execute_single_async(i, node_copies, backend_config.train_cfg, i, n)
                 for i in range(n)])
        super().on_start(worker_group, backend_config)


@dataclass
class CopiesFirstConfig(TorchConfig):
    train_cfg: dict[str, Any] | None = None

    @property
    def backend_cls(self):
        return _CopiesFirst


def fit(cfg: dict[str, Any], hp: TrainHParams, run: RunConfig) -> None:
    scaling = ScalingConfig(num_workers=hp.num_workers, use_gpu=hp.use_gpu,
                            resources_per_worker={"CPU": hp.cpus_per_worker})
    torch_config = CopiesFirstConfig(train_cfg=cfg) if hp.num_workers > 0 else None
    TorchTrainer(train_loop, train_loop_config=cfg, scaling_config=scaling, run_config=run,
                 torch_config=torch_config).fit()


@ray.remote
def _fit_local(cfg: dict[str, Any], run: RunConfig) -> None:
    fit(cfg, TrainHParams(**cfg["hp"]), run)


def run_training(task, model: ModelLocation, data: str, out: str, hp: TrainHParams, seed: int,
                 name: str, anchor: ModelLocation | None = None, estimate_gb: float | None = None
                 ) -> dict[str, Any]:
    """Train `model` on the table at `data` and write the result to the store folder `out`;
    returns what the run measured. `name` names the run under the store: a rerun after the
    driver died finds its checkpoints there and resumes (ray.train.get_checkpoint); a lost
    worker is retried, an out-of-memory error is not (StageOutOfMemory, with `estimate_gb`, the
    layout's estimated peak per GPU). The run's resumable state (72B: 1.2 TB of shards) is
    removed after."""
    store = Store(model.root)
    oom_marker = store.path("ray_train", f"{name}-{OOM_MARKER}")
    cfg = {"model": model, "data": data, "out": out, "hp": hp.model_dump(), "seed": seed,
           "task": task, "anchor": anchor, "oom_marker": oom_marker}
    run = RunConfig(name=name, storage_path=store.uri("ray_train"),
                    failure_config=FailureConfig(max_failures=3),
                    checkpoint_config=CheckpointConfig(num_to_keep=1))
    if hp.use_gpu:
        # Idle inference engines may hold GPUs this run needs: its own trial's stop, others' only
        # as far as the free GPUs fall short (one GPU per worker; local mode uses one).
        ray.get(engines.book().release_for_training.remote(engines.current_trial(), max(1, hp.num_workers)))
    try:
        if hp.num_workers == 0:
            # Outside the trial's placement group: the trial itself reserves almost nothing.
            local = _fit_local.options(num_cpus=hp.cpus_per_worker, scheduling_strategy=OWN_RESOURCES)
            ray.get(local.remote(cfg, run))
        else:
            fit(cfg, hp, run)
    except Exception as err:
        record = out_of_memory(store, oom_marker, hp)
        if record is None:
            raise
        estimate = f"{estimate_gb:.1f} GB" if estimate_gb is not None else "not known for this model"
        measured = (f"{record['peak_allocated_gb']:.1f} GB allocated at peak, {record['reserved_gb']:.1f} GB "
                    "reserved" if record["peak_allocated_gb"] is not None else "no CUDA figures")
        raise StageOutOfMemory(
            f"{name}: rank {record['rank']} ran out of memory ({record['error']}); {measured}; the "
            f"layout's estimate per GPU: {estimate}. Not retried: change the layout (more "
            "train.num_workers or train.grad_accum, train.activation_checkpointing; see --dry-run)"
        ) from err
    with store.fs.open_input_stream(f"{out}/{METRICS}") as f:
        metrics = json.loads(f.read())
    if store.exists(store.path("ray_train", name)):
        store.fs.delete_dir(store.path("ray_train", name))
    if store.exists(oom_marker):  # an earlier layout's
        store.fs.delete_file(oom_marker)
    return metrics
