"""The tiny ladder's rungs as artifacts of the store: built once, through the same `Builder` as
every stage, and read from the store by every node (never from the driver's cache, which only the
driver's node can see)."""

from __future__ import annotations

from w2s_ray.artifacts import Artifact, Builder, Store
from w2s_ray.config import RungSpec
from w2s_ray.ladder import recipe as ladder_recipe
from w2s_ray.models import rungs

#: the rung's pretraining summary, kept beside its weights
SUMMARY = "pretrain.json"


def tiny_rungs(specs: list[RungSpec]) -> list[str]:
    return [rungs.tiny_name(r) for r in specs if rungs.kind(r) == "tiny"]


def identity(name: str) -> str:
    """What a model trained from the tiny rung names as its base in its key."""
    recipe = ladder_recipe.RECIPE
    if name not in [r.name for r in recipe.rungs]:
        raise KeyError(f"tiny ladder has no rung {name!r}; allowed: {[r.name for r in recipe.rungs]}")
    return f"tiny:{recipe.key()}/{ladder_recipe.rung_dirname(name)}"


def artifact(name: str) -> Artifact:
    return Artifact("ladder", f"{ladder_recipe.RECIPE.key()}-{ladder_recipe.rung_dirname(name)}")


def rung_parameters(store: Store, specs: list[RungSpec]) -> dict[str, int | None]:
    """Each rung's parameter count where the store records it (the tiny rungs' pretraining
    summary), for the figures' size axis; None for a hub checkpoint, which is never loaded here."""
    out: dict[str, int | None] = {}
    for rung in specs:
        art = artifact(rungs.tiny_name(rung)) if rungs.kind(rung) == "tiny" else None
        out[rung.name] = (int(store.read_json(f"{store.location(art)}/{SUMMARY}")["params"])
                          if art is not None and store.committed(art) else None)
    return out


def publish_tiny_ladder(builder: Builder, names: list[str]) -> None:
    """Make sure every named tiny rung is committed in the store, building the missing ones."""
    wanted = list(dict.fromkeys(names))  # two ladder rungs may share one tiny model
    missing = [n for n in wanted if not builder.store.committed(artifact(n))]
    for name in wanted:
        if name not in missing:  # logged as reused, as any stage
            builder.ensure(artifact(name), _upload(builder.store, name), tag=name)
    if missing:
        import ray

        # One CPU, so it lands on a node that can pretrain: a cluster's head is often given no
        # CPUs, and the rungs are built on the node this runs on. Ray lends the CPU back while
        # it waits.
        ray.get(ray.remote(num_cpus=1)(_build_and_commit).remote(builder, missing))


def _upload(store: Store, name: str):
    """The rung's build step: its files, pretrained on this node, into the artifact's folder."""

    def build(folder: str) -> dict:
        store.upload_dir(ladder_recipe.rung_path(name), folder)
        return {}

    return build


def _build_and_commit(builder: Builder, names: list[str]) -> None:
    from w2s_ray.ladder import tiny_ladder

    tiny_ladder.build_ladder(names, report_to=(builder.store.root, builder.stage_log.building_folder()))
    for name in names:
        builder.ensure(artifact(name), _upload(builder.store, name), tag=name)
