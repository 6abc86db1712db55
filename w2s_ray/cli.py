"""Command line of the sweep: run the weak/strong size grid and print its PGR table.

    python sweeps/scale_grid.py --preset tiny
    python sweeps/scale_grid.py --preset smoke --seeds 0 1 --set train.lr=3e-4
    python sweeps/scale_grid.py --preset qwen15-scale --dry-run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from w2s_ray.config import ConfigError, SweepConfig, preset_names

if TYPE_CHECKING:
    from w2s_ray.console import Console

LOG_NAME = "console.log"


class Parser(argparse.ArgumentParser):
    """Appends the config, method and capability reference to --help only: building it imports
    every method and capability module, which an ordinary run should not wait for first."""

    def format_help(self) -> str:
        from w2s_ray.reference import reference

        return f"{super().format_help()}\n{reference()}\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help=f"one of {preset_names()} or a YAML file")
    p.add_argument("--storage", help="artifact/results root: a local path or s3:// gs:// file:// URI")
    p.add_argument("--name", help="sweep name (results and stage log live under it)")
    p.add_argument("--data-dir", help="offline mirror of the loaded datasets "
                                      "(written by python -m w2s_ray.data_mirror) instead of the hub")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="training seeds, one trial per (pair, seed); e.g. --seeds 0 1 2 "
                        "(the splits stay those of data_seed)")
    p.add_argument("--methods", nargs="+", help="e.g. weak wts ceiling ours noise-0.5 weaken-scan")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set train.lr=1e-4 --set splits.test=400")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's, Tune's and the stages' output on stderr too (it always goes "
                        "to console.log in the run folder) instead of the progress display")
    p.add_argument("--dry-run", action="store_true", help="print the stage graph, what is committed, "
                   "resource requests and GPU-hours (deduplicated vs naive grid); start nothing")
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict:
    out = {}
    for item in args.overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. train.lr=1e-4")
        key, value = item.split("=", 1)
        out[key] = value
    for field in ("storage", "name", "seeds", "methods", "data_dir"):
        if getattr(args, field) is not None:
            out[field] = getattr(args, field)
    return out


def local_gpus() -> int:
    """GPUs a Ray started in this process would see (torch counts them as Ray does: the visible
    CUDA devices)."""
    import torch

    return torch.cuda.device_count()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    from w2s_ray.checks import checked_config, resource_problem

    try:
        config = checked_config(args.preset, overrides_from(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        from w2s_ray.plan import dry_run

        print(dry_run(config))
        return 0
    if not os.environ.get("RAY_ADDRESS"):  # a Ray started here: what it has is known now
        cpus = args.num_cpus if args.num_cpus is not None else os.cpu_count() or 1
        problem = resource_problem(config, cpus, local_gpus())
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    # Ray, torch and transformers load only now: --help, a config error and --dry-run skip them.
    from w2s_ray.artifacts import Store, cache_dir
    from w2s_ray.console import chatter_to
    from w2s_ray.stages.fetch import RevisionError, pin_revisions, resolve_revision
    from w2s_ray.sweep import new_run_id

    try:  # before Ray starts: an unreachable hub fails here, not inside a trial
        config = pin_revisions(config, resolve_revision)
    except RevisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"storage: {config.storage}")
    run_id = new_run_id()
    store = Store(config.storage)
    run_folder = store.path("sweeps", config.name, "runs", run_id)
    # The log goes into the run folder; an object store cannot be appended to, so there it is
    # written on this machine and uploaded when the sweep ends.
    log_path = Path(run_folder if store.local else cache_dir() / "logs" / config.name / run_id)
    log_path = log_path / LOG_NAME
    try:
        with chatter_to(log_path, args.verbose) as console:
            print(f"log of Ray, Tune and the stages: {log_path}"
                  + ("" if args.verbose else " (--verbose shows it here)"), file=console.out)
            return run(config, run_id, args, console)
    finally:
        if not store.local:
            store.write_bytes_atomic(f"{run_folder}/{LOG_NAME}", log_path.read_bytes())


def run(config: SweepConfig, run_id: str, args: argparse.Namespace, console: Console) -> int:
    """The sweep inside the redirected console: progress, then the summary and the tables."""
    import ray

    from w2s_ray.progress import SweepProgress
    from w2s_ray.sweep import (
        SweepFailed,
        init_ray,
        run_sweep,
        summarize_engine_starts,
        summarize_stage_log,
    )

    out, err = console.out, console.err
    init_ray(args.num_cpus)
    progress = SweepProgress(out, live=not args.verbose)
    try:
        result = run_sweep(config, run_id, progress)
    except SweepFailed as failure:
        print(f"error: {failure}", file=err)
        return 1
    finally:
        progress.stop()  # already stopped unless the sweep raised
        ray.shutdown()  # inside the redirection: the workers' last words go to the log
    tables = result.tables
    print(summarize_stage_log(result.stage_log), file=out)
    print(summarize_engine_starts(result.engine_starts), file=out)
    scored_on = "" if config.evaluate_on == "test" else f"; scored on the {config.evaluate_on} split"
    print(f"\nPGR table (average accuracy over capabilities; mean ± s.e. over seeds{scored_on}):", file=out)
    print(tables["pgr"].to_markdown(index=False), file=out)
    print("\nPer capability:", file=out)
    print(tables["pgr_by_capability"].to_markdown(index=False), file=out)
    if "selection" in tables:
        print("\nReward-model selection (average over capabilities; gold read for analysis only):",
              file=out)
        print(tables["selection"].to_markdown(index=False), file=out)
    print(f"\nresults: {result.results}", file=out)
    print(f"report: {result.results}/report.html (figures and intervals beside it)", file=out)
    if result.failed:
        print(f"\n{len(result.failed)} trial(s) failed; the tables above leave them out:",
              *result.errors, sep="\n", file=err)
        return 1
    return 0
