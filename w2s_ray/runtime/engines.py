"""Inference engines that outlive a stage: one named Ray actor per (model, engine options).

A Ray Data actor pool ends with its stage, so each inference stage of one model (its labels on
D^b, its test evaluation, the relabel, reward scoring) started an engine of its own: on GPUs a
weight load plus vLLM's warm-up, minutes at 72B with tensor parallel 4. A host keeps its engine
between stages; Ray Data tasks send it the batches the actor pool would have got, in the same
batches, so outputs are those of the pool. A host is an asynchronous actor: with a backend that
decodes asynchronously (vLLM's `AsyncLLM`) it takes `inference.batches_in_flight` batches at once
and the engine batches their rows continuously, so it never idles on one batch's longest answers.

Hosts hold GPUs (and memory) that training needs too. The engine book, one named actor per Ray
cluster, creates every host, counts engine starts per model, and stops hosts: a stage holds a
lease on the host it uses; a training stage that asks for GPUs first stops the idle hosts of its
own trial, then other trials' idle GPU hosts only while the cluster's free GPUs fall short of its
need (`release_for_training`); beyond `inference.engines_kept` idle hosts the least recently used one
stops; a sweep stops the idle ones at its end. The book is owned by the process that made it
first (the sweep's driver), so its hosts end with the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from w2s_ray.config import InferenceSpec
from w2s_ray.models.location import ModelLocation


class GPUUnavailable(RuntimeError):
    """A stage asked for GPUs but its actor's torch sees none: it would decode on CPU."""


class EngineHost:
    """Holds one backend (a vLLM engine, or a transformers model on the actor's device)."""

    def __init__(self, backend: Callable, location: ModelLocation, torch_threads: int,
                 dtype: str, options: dict, gpus: float = 0.0):
        import torch

        if gpus and not torch.cuda.is_available():
            raise GPUUnavailable(
                f"inference.gpus_per_actor={gpus} but this actor's torch sees no CUDA device (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}); it would decode on CPU while "
                "holding the GPUs. Install a CUDA build of torch on the GPU nodes, or set "
                "inference.gpus_per_actor: 0")
        self.impl = backend(location.local(), torch_threads, dtype, **options)
        self.clock = BusyClock()

    async def __call__(self, batch):
        generate = getattr(self.impl, "generate", None)
        if not asyncio.iscoroutinefunction(generate):
            return self.impl(batch)  # a synchronous backend: one batch at a time, as it blocks the loop
        key = self.clock.start()
        try:
            out = await generate(batch)
        finally:
            busy = self.clock.stop(key)
        rows = len(out["compute_seconds"])
        # Batches overlap: each row's share of the engine's busy time, so a stage's sum is wall time.
        out["compute_seconds"] = np.full(rows, busy / rows)
        return out


class BusyClock:
    """The engine's busy time split among the batches in flight, each accruing an equal share
    while it runs (one event loop: no lock)."""

    def __init__(self):
        self.running: dict[int, float] = {}
        self.last = time.monotonic()
        self.keys = itertools.count()

    def _advance(self) -> None:
        now = time.monotonic()
        for key in self.running:
            self.running[key] += (now - self.last) / len(self.running)
        self.last = now

    def start(self) -> int:
        self._advance()
        key = next(self.keys)
        self.running[key] = 0.0
        return key

    def stop(self, key: int) -> float:
        self._advance()
        return self.running.pop(key)


def to_stop_for_training(hosts: dict[str, dict], trial: str | None, free_gpus: float, need_gpus: float
                         ) -> list[str]:
    """The idle hosts a training stage of `trial` stops: every one its own trial last used, then
    other trials' idle hosts that hold GPUs, least recently used first, while the cluster's free
    GPUs stay short of `need_gpus`. A host a stage holds is never stopped."""
    idle = sorted((h["used"], n) for n, h in hosts.items() if h["leases"] == 0)
    own = [n for _, n in idle if hosts[n]["trial"] == trial]
    free = free_gpus + sum(hosts[n]["gpus"] for n in own)
    stop = list(own)
    for _, name in idle:
        if free >= need_gpus:
            break
        if name not in stop and hosts[name]["gpus"]:
            stop.append(name)
            free += hosts[name]["gpus"]
    return stop


class EngineBook:
    """The cluster's hosts: name -> (handle, model, leases, last use), and engine starts per model."""

    def __init__(self):
        self.hosts: dict[str, dict] = {}
        self.starts: dict[str, int] = {}

    def acquire(self, name: str, model: str, spec: dict, trial: str | None = None) -> ray.actor.ActorHandle:
        """The host `name` with one more lease, started from `spec` if there is none; `trial`
        (the caller's, `current_trial`) is the one it last served."""
        host = self.hosts.get(name)
        if host is None:
            # A host lost with its node restarts elsewhere and its calls are retried there.
            handle = ray.remote(EngineHost).options(
                num_cpus=spec["cpus"], num_gpus=spec["gpus"] or None, max_restarts=3, max_task_retries=3,
            ).remote(**spec["init"])
            host = self.hosts[name] = {"handle": handle, "model": model, "leases": 0, "used": 0.0,
                                       "gpus": spec["gpus"]}
            self.starts[model] = self.starts.get(model, 0) + 1
        host["leases"] += 1
        host["trial"] = trial
        return host["handle"]

    def release(self, name: str, kept: int) -> None:
        """One lease fewer on `name`; then at most `kept` idle hosts stay."""
        host = self.hosts.get(name)
        if host is None:
            return
        host["leases"] -= 1
        host["used"] = time.monotonic()
        idle = sorted((h["used"], n) for n, h in self.hosts.items() if h["leases"] == 0)
        for _, stale in idle[:max(0, len(idle) - kept)]:
            self._stop(stale)

    def release_idle(self) -> int:
        """Stops every host no stage holds (a sweep's end); how many stopped."""
        idle = [n for n, h in self.hosts.items() if h["leases"] == 0]
        for name in idle:
            self._stop(name)
        return len(idle)

    def release_for_training(self, trial: str | None, need_gpus: float) -> list[str]:
        """Before a GPU training stage of `trial`: stops the hosts `to_stop_for_training` names
        (other trials' engines stay warm unless their GPUs are needed); their names."""
        stop = to_stop_for_training(self.hosts, trial, ray.available_resources().get("GPU", 0.0), need_gpus)
        for name in stop:
            self._stop(name)
        return stop

    def hosts_of(self, trial: str | None) -> list[str]:
        return sorted(n for n, h in self.hosts.items() if h["trial"] == trial)

    def discard(self, names: list[str]) -> None:
        """Releases the hosts of a failed stage and stops those no other stage holds: a host that
        could not start (or broke) is not kept for the next stage."""
        for name in names:
            host = self.hosts.get(name)
            if host is not None:
                host["leases"] -= 1
                if host["leases"] == 0:
                    self._stop(name)

    def loaded(self, model: str) -> None:
        """A model loaded outside a host (a warm worker's own copy) counts as an engine start."""
        self.starts[model] = self.starts.get(model, 0) + 1

    def engine_starts(self) -> dict[str, int]:
        return dict(self.starts)

    def _stop(self, name: str) -> None:
        # A graceful exit runs the host's exit handlers, which stop a vLLM engine's own process.
        self.hosts.pop(name)["handle"].__ray_terminate__.remote()


_BOOKS: dict[str, ray.actor.ActorHandle] = {}


def book() -> ray.actor.ActorHandle:
    """The cluster's engine book. The driver makes it first, on its own node: a lost worker node
    takes its hosts but not the record of them. The handle is kept for the process's life, since
    Ray ends a named actor (and the hosts it owns) when its maker drops the last handle."""
    job = ray.get_runtime_context().get_job_id()
    if job not in _BOOKS:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        _BOOKS[job] = ray.remote(EngineBook).options(
            name="w2s-engines", get_if_exists=True, scheduling_strategy=here, num_cpus=0).remote()
    return _BOOKS[job]


def existing_book() -> ray.actor.ActorHandle | None:
    """The cluster's engine book if a driver has made it; a worker never makes it, since the
    book would then end with that worker."""
    try:
        return ray.get_actor("w2s-engines")
    except ValueError:
        return None


def current_trial() -> str | None:
    """The calling trial: its placement group (Tune gives each trial one), None outside any."""
    group = ray.get_runtime_context().get_placement_group_id()
    return str(group) if group else None


def host_name(model_id: str, source: str, inf: InferenceSpec, options: dict, index: int) -> str:
    layout = json.dumps([source, inf.dtype, inf.gpus_per_actor, inf.torch_threads, sorted(options.items())],
                        default=str)
    return f"{model_id}#{hashlib.sha256(layout.encode()).hexdigest()[:10]}#{index}"


@contextlib.contextmanager
def leased_hosts(engines: ray.actor.ActorHandle, model_id: str, names: list[str], spec: dict, kept: int
                 ) -> Iterator[list[ray.actor.ActorHandle]]:
    """The stage's hosts, each leased for the stage's duration; then `kept` idle ones stay."""
    trial = current_trial()
    handles = ray.get([engines.acquire.remote(n, model_id, spec, trial) for n in names])
    try:
        yield handles
    except BaseException:
        ray.get(engines.discard.remote(names))
        raise
    ray.get([engines.release.remote(n, kept) for n in names])


def call_host(batch, hosts: list[ray.actor.ActorHandle]):
    """A Ray Data task's batch, decoded by one of the stage's hosts (chosen by the batch's first
    row, so a multi-engine stage spreads its batches)."""
    host = hosts[int(batch["_row"][0]) % len(hosts)]
    return ray.get(host.__call__.remote(batch))
