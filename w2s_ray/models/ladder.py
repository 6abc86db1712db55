"""Resolving a ladder rung to something `from_pretrained` loads: a hub id, a path, or a tiny rung."""

from __future__ import annotations

import time

import ray

from w2s_ray.artifacts import MARKER, Artifact, StageLog, Store
from w2s_ray.config import RungSpec
from w2s_ray.models import tiny_ladder

TINY = "tiny:"


def tiny_rungs(rungs: list[RungSpec]) -> list[str]:
    return [r.model.removeprefix(TINY) for r in rungs if r.model.startswith(TINY)]


def tiny_rung_folder(store: Store, name: str) -> str:
    """Where the store keeps a built tiny rung: every node reads it from there, never from the
    driver's cache, which only the driver's node can see."""
    recipe = tiny_ladder.RECIPE
    if name not in [r.name for r in recipe.rungs]:
        raise KeyError(f"tiny ladder has no rung {name!r}; allowed: {[r.name for r in recipe.rungs]}")
    return store.path("ladder", recipe.key(), tiny_ladder.rung_dirname(name))


def base_source(rung: RungSpec, store: Store) -> tuple[str, str, bool]:
    """(identity for artifact keys, what from_pretrained loads, whether that is in the store)."""
    if rung.model.startswith(TINY):
        name = rung.model.removeprefix(TINY)
        folder = tiny_rung_folder(store, name)
        return f"tiny:{tiny_ladder.RECIPE.key()}/{tiny_ladder.rung_dirname(name)}", folder, True
    return rung.model, rung.model, False


def rung_parameters(store: Store, rungs: list[RungSpec]) -> dict[str, int | None]:
    """Each rung's parameter count where the store records it (the tiny rungs' pretraining
    summary), for the figures' size axis; None for a hub checkpoint, which is never loaded here."""
    out: dict[str, int | None] = {}
    for rung in rungs:
        summary = f"{tiny_rung_folder(store, rung.model.removeprefix(TINY))}/pretrain.json" \
            if rung.model.startswith(TINY) else None
        out[rung.name] = int(store.read_json(summary)["params"]) if summary and store.exists(summary) else None
    return out


def publish_tiny_ladder(store: Store, names: list[str], stage_log: StageLog) -> None:
    """Make sure every named tiny rung is in the store, building the missing ones once.

    A rung folder in the store is read only once its marker exists, and the marker is written
    after every file, so a publish killed half-way is simply redone.
    """
    missing = []
    for name in dict.fromkeys(names):  # two ladder rungs may share one tiny model
        if store.exists(f"{tiny_rung_folder(store, name)}/{MARKER}"):
            stage_log.record(Artifact("ladder", _rung_key(name)), "reused", 0.0, tag=name)
        else:
            missing.append(name)
    if missing:
        ray.get(_build_and_upload.remote(store, missing, stage_log))


def _rung_key(name: str) -> str:
    return f"{tiny_ladder.RECIPE.key()}-{name}"


# One CPU, so it lands on a node that can pretrain: a cluster's head is often given no CPUs,
# and the rungs are built on the node this runs on. Ray lends the CPU back while it waits.
@ray.remote(num_cpus=1)
def _build_and_upload(store: Store, names: list[str], stage_log: StageLog) -> None:
    tiny_ladder.build_ladder(names)
    for name in names:
        start = time.time()
        folder = tiny_rung_folder(store, name)
        store.upload_dir(tiny_ladder.rung_path(name), folder)
        store.write_json(f"{folder}/{MARKER}", {"committed_at": time.time()})
        stage_log.record(Artifact("ladder", _rung_key(name)), "built", time.time() - start, tag=name)
