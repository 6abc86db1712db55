"""The sweep: a Ray Tune grid over (weak, strong, seed); each trial runs its method recipes.

Trials are light drivers (no CPU, half a GB of memory): the heavy work inside them asks Ray for its own
resources (Ray Train workers, Ray Data actors), so trials never hold the CPUs their stages need.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import ray
from ray import tune

from w2s_ray import analysis, throughput, tracking
from w2s_ray.artifacts import Builder, StageLog, Store, lease_book
from w2s_ray.config import SweepConfig
from w2s_ray.ladder.publish import publish_tiny_ladder, rung_parameters, tiny_rungs
from w2s_ray.methods import NotApplicable, targets
from w2s_ray.progress import TRAINING_STAGES, SweepProgress
from w2s_ray.report import write_results
from w2s_ray.runtime import engines, nodes
from w2s_ray.stages import data, fetch
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.evaluate import evaluate, metric_rows

log = logging.getLogger(__name__)


def leases_for(store: Store):
    return lease_book(hashlib.sha256(store.root.encode()).hexdigest()[:12])


def trial_order(config: SweepConfig) -> list[dict]:
    """Every (pair, seed) trial, the largest strong model first (then the largest weak one).

    A trial's time grows with its models, so starting the longest first keeps every CPU busy to
    the end: in ladder order the largest pair started last and ran alone for a third of the tiny
    sweep while the other CPU idled.
    """
    rank = {name: i for i, name in enumerate(config.ladder.names())}  # rungs are listed smallest first
    pairs = sorted(config.pair_list(), key=lambda p: (-rank[p[1]], -rank[p[0]]))
    return [{"pair": list(p), "seed": s} for p in pairs for s in config.seeds]


def run_trial(params: dict) -> None:
    ray.data.DataContext.get_current().enable_progress_bars = False
    config = SweepConfig.model_validate(params["config"])
    weak, strong = params["trial"]["pair"]
    seed, run_id = params["trial"]["seed"], params["run_id"]
    store = Store(config.storage)
    builder = Builder(store, StageLog(store, config.name, run_id), leases_for(store),
                      # Stable across Tune's retry of this trial: a trial lost with its node
                      # takes its leases back at once instead of waiting for them to lapse.
                      holder=f"{run_id}-{weak}-{strong}-{seed}")
    ctx = StageContext(config, store, builder, seed, pair=(weak, strong))
    frames, item_frames = [], []
    test = data.split_table(ctx, "test", with_gold_labels=True)
    # Every model is trained (and every table labelled) before any is evaluated: a labelling
    # pass then generates its model's evaluation split along (pipeline.evaluated_along), so a
    # model is loaded, or its engine started, once.
    made = {}
    for name in config.methods:
        try:
            made[name] = targets(ctx, name, weak, strong, test)
        except NotApplicable as why:
            log.warning("%s on %s -> %s: %s", name, weak, strong, why)
    analysis.pair_artifacts(ctx, weak, strong, config.methods)
    for name, method_targets in made.items():
        items = evaluate(ctx, method_targets).assign(method=name)
        frames.append(metric_rows(items).assign(method=name))
        item_frames.append(items)
    keys = {"sweep": config.name, "weak": weak, "strong": strong, "seed": seed}
    rows = pd.concat(frames, ignore_index=True).assign(**keys)
    rows = rows[[*keys, "method", "capability", "metric", "value"]]
    items = pd.concat(item_frames, ignore_index=True).assign(**keys)
    items = items[[*keys, "method", "capability", "uid", "correct"]]
    notes = analysis.pair_rows(ctx, weak, strong, config.methods).assign(**keys)
    notes = notes[[*keys, "analysis", "capability", "metric", "value"]]
    folder = store.path("sweeps", config.name, "runs", run_id)
    name = f"{weak}-{strong}-seed{seed}.parquet"
    store.write_table(f"{folder}/analysis/{name}", notes)
    store.write_table(f"{folder}/rows/{name}", rows)
    store.write_table(f"{folder}/items/{name}", items)
    avg = rows[rows["metric"] == "accuracy"].groupby("method")["value"].mean()
    tune.report({"rows": f"{folder}/rows/{name}", "analysis": f"{folder}/analysis/{name}",
                 "items": f"{folder}/items/{name}",
                 **{f"acc_{m}": float(v) for m, v in avg.items()}})


class SweepResult(NamedTuple):
    rows: pd.DataFrame  # tidy metric rows of the trials that finished
    tables: dict[str, pd.DataFrame]
    stage_log: pd.DataFrame  # this run's events
    failed: list[str]  # one line per failed trial: "<weak> -> <strong> seed <s>: <Error>: <first line>"
    errors: list[str]  # the same trials' errors in full (tracebacks)
    results: str  # where the tables were written
    engine_starts: dict[str, int]  # model id -> engine starts (or warm-worker loads) in this run


class SweepFailed(RuntimeError):
    """No trial finished, so there is no table to write."""


def first_line(error: BaseException) -> str:
    """The error's type and the first line of its message. Ray wraps an error raised in a task in
    one whose first line only names the task (`ray::ImplicitFunc.train() (pid=...)`); what the
    user can act on is its cause's."""
    while isinstance(getattr(error, "cause", None), BaseException) and error.cause is not error:
        error = error.cause
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def trial_name(params: dict) -> str:
    (weak, strong), seed = params["trial"]["pair"], params["trial"]["seed"]
    return f"{weak} -> {strong} seed {seed}"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def run_sweep(config: SweepConfig, run_id: str | None = None,
              progress: SweepProgress | None = None) -> SweepResult:
    """Run the grid; tables cover every (pair, seed) that finished, failures are listed.
    `progress` is started here, once the plan's keys can be known; its owner stops it."""
    started = time.time()
    unready = fetch.unprepared(config)
    if unready:
        raise ValueError(f"run_sweep: {unready}")
    run_id = run_id or new_run_id()
    store = Store(config.storage)
    leases = leases_for(store)  # made by the driver, before any trial can race to create it
    engine_book = engines.book()
    starts_before = ray.get(engine_book.engine_starts.remote())
    run_folder = store.path("sweeps", config.name, "runs", run_id)
    store.write_json(f"{run_folder}/config.json", config.model_dump(mode="json"))
    if progress is not None:
        progress.start(config, store, run_id, leases)
    publish_tiny_ladder(Builder(store, StageLog(store, config.name, run_id), leases, holder=f"{run_id}-ladder"),
                        tiny_rungs(config.ladder.rungs))
    trainable = tune.with_resources(run_trial, {"cpu": config.sweep.trial_cpus,
                                                "memory": int(config.sweep.trial_memory_gb * 2**30)})
    tuner = tune.Tuner(
        trainable,
        param_space={"config": config.model_dump(mode="json"), "run_id": run_id,
                     "trial": tune.grid_search(trial_order(config))},
        tune_config=tune.TuneConfig(max_concurrent_trials=config.sweep.max_concurrent_trials),
        # A new experiment per run, not Tuner.restore: a trial keeps no state of its own (all it
        # made is an artifact), so a rerun resumes by reusing what is committed (docs/scaling.md: Resume).
        # One retry: a trial lost with its node (or to a transient error) runs again and reuses
        # every artifact it had committed; a second failure is the trial's own and is reported.
        run_config=tune.RunConfig(name=f"{config.name}-{run_id}", storage_path=store.uri("tune"),
                                  verbose=1, failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=tracking.callbacks(config, run_id)),
    )
    try:
        grid = tuner.fit()
    finally:
        ray.get(engine_book.release_idle.remote())
    if progress is not None:
        progress.stop()  # its last line before any table
    # Counted by the cluster's book: a sweep running beside this one on the cluster adds its own.
    starts = ray.get(engine_book.engine_starts.remote())
    starts = {m: n - starts_before.get(m, 0) for m, n in starts.items() if n > starts_before.get(m, 0)}
    finished = [r for r in grid if r.error is None and r.metrics and "rows" in r.metrics]
    failed = [f"{trial_name(r.config)}: {first_line(r.error)}" for r in grid if r.error is not None]
    errors = [f"{trial_name(r.config)}:\n{r.error}" for r in grid if r.error is not None]
    stage_log = StageLog(store, config.name, run_id).frame()
    stage_log = stage_log[stage_log["run_id"] == run_id] if len(stage_log) else stage_log
    if not finished:
        raise SweepFailed(f"all {len(failed)} trial(s) failed:\n" + "\n".join(errors))
    rows = pd.concat([store.read_table(r.metrics["rows"]) for r in finished], ignore_index=True)
    rows = rows.sort_values(["weak", "strong", "seed", "method", "capability", "metric"], ignore_index=True)
    notes = pd.concat([store.read_table(r.metrics["analysis"]) for r in finished], ignore_index=True)
    notes = notes.sort_values(["weak", "strong", "seed", "analysis", "capability", "metric"],
                              ignore_index=True)
    items = pd.concat([store.read_table(r.metrics["items"]) for r in finished], ignore_index=True)
    items = items.sort_values(["weak", "strong", "seed", "method", "capability", "uid"], ignore_index=True)
    results = store.path("sweeps", config.name, "results")
    speed = throughput.table(stage_log)
    # The tables of a partial grid must not read as complete: the failures are written beside
    # them first, so no reader sees the new tables without the list.
    failures = f"{results}/FAILED.txt"
    if failed:
        store.write_bytes_atomic(failures, ("\n".join(failed) + "\n").encode())
    elif store.exists(failures):
        store.fs.delete_file(failures)
    run = {"sweep": config.name, "run_id": run_id,
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
           "wall_seconds": round(time.time() - started, 1),
           "trials": {"finished": len(finished), "failed": failed},
           "stages": stage_counts(stage_log), "rung_parameters": rung_parameters(store, config.ladder.rungs),
           "engine_starts": starts, "throughput": throughput.records(speed),
           "config": config.model_dump(mode="json")}
    tables = write_results(store, results, rows, notes, config.methods, items=items, run=run)
    if tracking.asked(config):
        report = f"{results}/report.html"
        with store.fs.open_input_stream(report) as f:
            tracking.log_tables(config, run_id, {**tables, "throughput": speed}, f.read())
    return SweepResult(rows, tables, stage_log, failed, errors, store.uri("sweeps", config.name, "results"),
                       starts)


def stage_counts(stage_log: pd.DataFrame) -> dict[str, dict[str, int]]:
    """stage -> {built: n, reused: n} of this run's events."""
    if stage_log.empty:
        return {}
    counts = stage_log.groupby(["stage", "status"]).size().unstack(fill_value=0)
    return {stage: {status: int(n) for status, n in row.items()} for stage, row in counts.iterrows()}


def consumers(stage_log: pd.DataFrame, artifact_id: str) -> tuple[set[str], set[str]]:
    """Tags of the stages that read `artifact_id` directly, and of everything built downstream of it."""
    ids = stage_log["stage"] + "/" + stage_log["key"]
    inputs = stage_log.get("inputs", pd.Series(None, index=stage_log.index, dtype=object))
    reads = inputs.apply(lambda x: set(x) if isinstance(x, list) else set())
    direct = set(stage_log.loc[reads.apply(lambda r: artifact_id in r), "tag"].dropna())
    reached, frontier = set(), {artifact_id}
    while frontier:
        hit = reads.apply(lambda r, f=frontier: bool(r & f)) & ~ids.isin(reached)
        frontier = set(ids[hit])
        reached |= frontier
    return direct, set(stage_log.loc[ids.isin(reached), "tag"].dropna()) - direct


def summarize_stage_log(stage_log: pd.DataFrame) -> str:
    if stage_log.empty:
        return "stage log: no stage ran"
    trained = int((stage_log["stage"].isin(TRAINING_STAGES) & (stage_log["status"] == "built")).sum())
    lines = [f"stage log of this run (training stages executed: {trained}):"]
    for status in ("built", "reused"):
        per_stage = stage_log[stage_log["status"] == status]["stage"].value_counts()
        if len(per_stage):
            lines.append(f"  {status} {int(per_stage.sum())}: "
                         + ", ".join(f"{stage} {n}" for stage, n in per_stage.items()))
    for stage, tag in (("sft", "wts"), ("generate", "relabel")):
        made = stage_log[(stage_log["stage"] == stage) & (stage_log["tag"] == tag)]
        for key in sorted(set(made["key"])):
            direct, further = consumers(stage_log, f"{stage}/{key}")
            status = "/".join(sorted(set(made.loc[made["key"] == key, "status"])))
            lines.append(f"{tag} {key[:8]} ({status}) used by: {', '.join(sorted(direct))}"
                         + (f"; downstream: {', '.join(sorted(further))}" if further else ""))
    return "\n".join(lines)


def summarize_engine_starts(starts: dict[str, int]) -> str:
    """One line: engine starts (or warm-worker model loads) per model in this run."""
    if not starts:
        return "engine starts: none (every inference stage was reused)"
    return (f"engine starts (or warm-worker model loads): {sum(starts.values())} for {len(starts)} models, "
            f"at most {max(starts.values())} for one")


#: A Ray started here keeps idle worker processes (with their imports and, for CPU inference,
#: their loaded models) for the sweep's next stages: by default it kills those beyond one per
#: CPU after 1 s idle, and on 2 cores the next stage then paid a new process (3-12 s) instead
#: of ~0.2 s. Each idle worker holds ~0.5 GB.
WARM_WORKERS = {"num_workers_soft_limit": 8, "idle_worker_killing_time_threshold_ms": 300_000}


def init_ray(num_cpus: int | None) -> None:
    """Join a cluster when RAY_ADDRESS is set (ray job submit), else start Ray in this process."""
    # Like the store, the cache root is resolved here: Ray's processes each have their own cwd.
    if os.environ.get("W2S_RAY_CACHE"):
        os.environ["W2S_RAY_CACHE"] = str(Path(os.environ["W2S_RAY_CACHE"]).expanduser().resolve())
    if not ray.is_initialized():
        # A cluster keeps the system config it was started with; only a Ray started here takes ours.
        started_here = {} if os.environ.get("RAY_ADDRESS") else {"_system_config": WARM_WORKERS,
                                                                 "resources": nodes.local_resources()}
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, namespace="w2s_ray",
                 logging_level=logging.WARNING, **started_here)
