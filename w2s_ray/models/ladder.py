"""Resolving a ladder rung to something `from_pretrained` loads: a hub id, a path, or a tiny rung."""

from __future__ import annotations

import time

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
    """Build the named tiny rungs on this machine (once) and copy each into the store (once).

    A rung folder in the store is read only once its marker exists, and the marker is written
    after every file, so a publish killed half-way is simply redone.
    """
    if not names:
        return
    tiny_ladder.build_ladder(names)
    for name in names:
        folder = tiny_rung_folder(store, name)
        art = Artifact("ladder", f"{tiny_ladder.RECIPE.key()}-{name}")
        if store.exists(f"{folder}/{MARKER}"):
            stage_log.record(art, "reused", 0.0, tag=name)
            continue
        start = time.time()
        store.upload_dir(tiny_ladder.rung_path(name), folder)
        store.write_json(f"{folder}/{MARKER}", {"committed_at": time.time()})
        stage_log.record(art, "built", time.time() - start, tag=name)
