"""The checks that tie a config to the registries: capabilities and what their data can hold,
methods, and the model sizes the resource plan lays out. The CLI runs them once, before Ray
starts; a config is then only re-validated field by field in each trial (`config.py`), which
imports nothing of the package.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from w2s_ray import methods, tracking
from w2s_ray.capabilities import registry
from w2s_ray.config import ConfigError, SweepConfig, load_config
from w2s_ray.models import layout, resources, rungs
from w2s_ray.plan import measured_rates

#: the stores the project opens (pyarrow.fs): a local path, or a URI with one of these schemes
SCHEMES = ("file", "s3", "gs")


def storage_problem(root: str) -> str | None:
    """Why the project could not keep its artifacts under `root`, if so: a scheme pyarrow.fs does
    not open here, a bucket that does not exist or cannot be read, a path that is a file, a local
    folder this user cannot write. Asked once, before Ray starts (a store that fails later fails
    inside a trial, after minutes of work)."""
    scheme = root.split("://", 1)[0] if "://" in root else None
    if scheme is not None and scheme not in SCHEMES:
        return f"storage: {root!r}: unsupported scheme {scheme + '://'!r}; allowed: a local path or " \
               f"{', '.join(s + '://' for s in SCHEMES)}"
    if scheme in (None, "file"):
        path = Path(root.removeprefix("file://")).expanduser()
        if path.exists() and not path.is_dir():
            return f"storage: {root!r} is a file; allowed: a folder (made if missing) or a URI"
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            return f"storage: {root!r}: {existing} is a file, not a folder; allowed: a writable folder"
        try:  # a real write: permission bits do not tell root, read-only mounts or /proc apart
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            return f"storage: {root!r}: cannot write in {existing} ({err.strerror}); allowed: a writable folder"
        return None
    import pyarrow.fs as pafs

    try:
        fs, base = pafs.FileSystem.from_uri(root)
        bucket = base.split("/", 1)[0]
        found = fs.get_file_info(bucket).type
    except (OSError, ValueError) as err:  # no credentials, unreachable endpoint, malformed URI
        return f"storage: {root!r} cannot be opened: {err}"
    if found == pafs.FileType.NotFound:
        return f"storage: bucket {bucket!r} of {root!r} does not exist (or these credentials cannot see it); " \
               "allowed: an existing bucket"
    return None


def problem(config: SweepConfig) -> str | None:
    """The first thing in `config` the registries or the store do not allow, as a message that
    names the field and what is allowed there; None when there is none."""
    found = storage_problem(config.storage)
    if found is not None:
        return found
    known = registry.names()
    for cap in config.capabilities:
        if cap not in known:
            return f"capabilities: unknown capability {cap!r}; allowed: {known}"
    for cap in config.capabilities:
        try:
            registry.get(cap).validate(config.sizes_for(cap).model_dump(), config.data_dir, config.evaluate_on)
        except FileNotFoundError as err:  # a missing mirror file
            return f"data_dir: {err}"
        except ValueError as err:
            field = f"split_overrides.{cap}" if cap in config.split_overrides else "splits"
            return f"{field}: {err}"
    unsized = unplannable(config)
    if unsized is not None:
        return unsized
    if config.train.toward_base or config.stage2.toward_base:
        for rung in config.ladder.rungs:
            if layout.resolve(config, rung.name).train.strategy == "fsdp":
                field = "train.toward_base" if config.train.toward_base else "stage2.toward_base"
                return (f"{field}: the resource plan trains rung {rung.name!r} with fsdp, and weight "
                        "averaging supports ddp only; allowed: 0 there")
    lacking = tracking.missing(config)
    if lacking:
        return lacking
    measured = config.sweep.measured_throughput
    try:
        measured_rates(measured)
    except (OSError, ValueError, KeyError) as err:
        return (f"sweep.measured_throughput: {measured!r} cannot be read as a throughput table ({err}); "
                "allowed: a previous run's results/throughput.csv, or null")
    over = over_memory(config)
    if over and not config.sweep.allow_over_memory:
        return (f"sweep.allow_over_memory: {over}; --dry-run lists every GPU stage's estimate. Allowed: "
                "a layout that fits (train.num_workers, train.grad_accum, train.activation_checkpointing), "
                "or true to start it anyway")
    for name in config.methods:
        try:
            methods.resolve(name, config.capabilities)
        except ValueError as err:
            return str(err)
    for needed in ("weak", "ceiling"):
        if needed not in config.methods:
            return (f"methods: {needed!r} is required (PGR is measured against it); "
                    f"allowed methods: {methods.allowed()}")
    return None


def unplannable(config: SweepConfig) -> str | None:
    """A rung the resource plan is asked to lay out but cannot size: without this, its stages
    would run silently on the preset's own fields (one worker, no sharding) and fail at their
    first GPU allocation."""
    asked = [f for f, on in (("train.plan", config.train.plan), ("inference.plan", config.inference.plan)) if on]
    if not asked:
        return None
    for rung in config.ladder.rungs:
        if rungs.kind(rung) == "tiny":
            continue
        found = rungs.config(rung)
        if found is not None and resources.arch_of(found) is not None:
            continue
        why = ("its config.json was found neither on this machine (Hugging Face cache, local path) "
               "nor on the hub" if found is None else
               "its config.json describes an architecture the memory estimate cannot size (a mixture "
               "of experts, or no hidden size / layers / heads / vocabulary)")
        return (f"{asked[0]}: rung {rung.name!r} ({rung.model}): {why}; allowed: a model whose "
                f"config.json can be read here (a local path, or the hub reachable), or {asked[0]} false "
                "with a layout of your own (train.num_workers, train.strategy, inference.gpus_per_actor)")
    return None


def resource_problem(config: SweepConfig, cpus: float, gpus: int) -> str | None:
    """Why a stage of `config` could never be scheduled on a Ray started here with `cpus` CPUs
    and `gpus` GPUs, if so: Ray would wait for it forever, silently. (A cluster that autoscales
    is not asked: its nodes appear as stages ask for them.)"""
    if cpus < 1:
        return f"--num-cpus: {cpus:g}; allowed: at least 1"
    for rung in config.ladder.names():
        lay = layout.resolve(config, rung)
        for section, hp in (("train", lay.train), ("stage2", lay.stage2), ("reward", lay.reward)):
            workers = max(1, hp.num_workers)
            planned = " (the resource plan's)" if hp.plan and lay.arch else ""
            if hp.cpus_per_worker * workers > cpus:
                return (f"train.cpus_per_worker: {workers} x {hp.cpus_per_worker:g} CPUs{planned} for one "
                        f"{section} stage of rung {rung!r}, but this machine's Ray has {cpus:g}; allowed: "
                        f"train.num_workers x train.cpus_per_worker <= {cpus:g} (or --num-cpus)")
            if hp.use_gpu and workers > gpus:
                return (f"train.use_gpu: {workers} GPU(s){planned} for one {section} stage of rung {rung!r}, "
                        f"but this machine has {gpus}; allowed: train.use_gpu false and train.plan false "
                        "here, or a GPU cluster (docs/cluster.md)")
        inf = lay.inference
        if inf.cpus_per_actor > cpus:
            return (f"inference.cpus_per_actor: {inf.cpus_per_actor:g}, but this machine's Ray has {cpus:g} "
                    f"CPUs; allowed: at most {cpus:g}")
        if inf.gpus_per_actor > gpus:
            return (f"inference.gpus_per_actor: {inf.gpus_per_actor:g} for rung {rung!r}, but this machine "
                    f"has {gpus} GPU(s); allowed: 0 and inference.plan false here, or a GPU cluster")
    return None


def over_memory(config: SweepConfig) -> str | None:
    """The first GPU stage whose estimated peak per GPU exceeds FIT_GB, named with its estimate."""
    from w2s_ray.methods.w2sr import DPO_METHODS
    from w2s_ray.plan import stage_memory_gb

    dpo = ("dpo",) if DPO_METHODS & set(config.methods) else ()
    for rung in config.ladder.names():
        for stage in ("sft", "reward_model", *dpo, "generate"):
            gb = stage_memory_gb(config, {"stage": stage, "rung": rung})
            if gb is not None and gb > resources.FIT_GB:
                return (f"the {stage} stages of rung {rung!r} need an estimated {gb:.1f} GB per GPU, over the "
                        f"{resources.FIT_GB:.0f} GB limit (90% of {resources.GPU_GB:.0f} GB)")
    return None


def check(config: SweepConfig) -> SweepConfig:
    """`config`, once the registries allow it; else ConfigError."""
    found = problem(config)
    if found is not None:
        raise ConfigError(f"invalid config:\n  {found}")
    return config


def checked_config(preset: str, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """The driver's config: loaded, validated field by field, then against the registries."""
    return check(load_config(preset, overrides))
