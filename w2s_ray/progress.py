"""The sweep's progress display: stages done of the dry-run planner's total, built vs reused, the
stage each trial is building now, elapsed time and ETA.

Everything is read from what the sweep already records, so trials need no extra reporting: the
stage log (one event per stage a trial builds or reuses) and the build leases (the key each trial
is building holds one). A stage counts once however many trials reuse it, as in the plan.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import ray
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from w2s_ray.artifacts import Artifact, StageLog, Store
from w2s_ray.config import SweepConfig

log = logging.getLogger(__name__)

TRAINING_STAGES = ("sft", "reward_model", "dpo")
#: a stage-log event older than the run's start by more than this is another run's (clock skew
#: between nodes stays far below it)
SKEW_S = 60.0
#: seconds between listings of the stage-log folder: an object store bills and throttles LIST
#: requests, and a remote sweep's stages take minutes, so its count may lag a few seconds
LIST_EVERY_S = {"local": 1.0, "remote": 10.0}
#: seconds between the lines a pipe or a log gets while work before the first stage runs
BUILDING_EVERY_S = 30.0


@dataclass
class Snapshot:
    total: int
    done: int = 0
    built: int = 0
    reused: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    running: list[tuple[str, str]] = field(default_factory=list)  # (trial, stage it builds)
    building: list[str] = field(default_factory=list)  # work before the first stage, and how far


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StageWatcher:
    """Folds this run's stage-log events and live leases into a Snapshot."""

    def __init__(self, config: SweepConfig, store: Store, run_id: str, leases: Any,
                 planned: list[dict[str, Any]]):
        self.store, self.run_id, self.leases = store, run_id, leases
        self.planned = {f"{s['stage']}/{s['key']}": s for s in planned}
        self.trials = {f"{run_id}-{w}-{s}-{seed}": f"{w} -> {s} seed {seed}"
                       for w, s in config.pair_list() for seed in config.seeds}
        self.folder = store.path("sweeps", config.name, "stage_log")
        self.building_folder = StageLog(store, config.name, run_id).building_folder()
        self.building: list[str] = []
        self.start = time.time()
        self.first_event: float | None = None
        self.seen_files: set[str] = set()
        self.status: dict[str, str] = {}  # stage id -> "built" | "reused"
        self.build_seconds: dict[str, list[float]] = {}  # stage name -> seconds of each build
        self.pending = {i for i, s in self.planned.items()
                        if not store.committed(Artifact(s["stage"], s["key"]))}
        self.list_every_s = LIST_EVERY_S["local" if store.local else "remote"]
        self.listed_at = float("-inf")

    def _read_events(self) -> None:
        for path in self.store.list_files(self.folder):
            name = path.rsplit("/", 1)[-1]
            if name in self.seen_files or not name.endswith(".json"):  # or a write in flight
                continue
            self.seen_files.add(name)
            try:
                if float(name.split("-", 1)[0]) < self.start - SKEW_S:
                    continue
                event = self.store.read_json(path)
            except (ValueError, OSError):  # not an event of ours: never read it again
                continue
            stage_id = f"{event['stage']}/{event['key']}"
            if event.get("run_id") != self.run_id or stage_id not in self.planned:
                continue
            self.first_event = self.first_event or time.time()
            if self.status.get(stage_id) != "built":
                self.status[stage_id] = event["status"]
            if event["status"] == "built":
                self.build_seconds.setdefault(event["stage"], []).append(float(event["seconds"]))
            self.pending.discard(stage_id)

    def _running(self) -> list[tuple[str, str]]:
        try:
            held = ray.get(self.leases.held.remote(f"{self.run_id}-"), timeout=10)
        except (ray.exceptions.RayError, AttributeError) as err:  # a lease book of older code
            log.debug("no lease listing: %s", err)
            return []
        latest = {holder: key for key, holder in held}
        out = []
        for holder, key in latest.items():
            stage = self.planned.get(key, {"stage": key.split("/")[0]})
            tag = stage.get("tag")
            what = stage["stage"] + (f" {tag}" if tag and tag != stage["stage"] else "")
            out.append((self.trials.get(holder, holder), what + (f" ({stage['rung']})"
                                                                 if stage.get("rung") else "")))
        return sorted(out)

    def poll(self, fresh: bool = False) -> Snapshot:
        """The state now; the stage log is listed again only after `list_every_s` (or when
        `fresh`), while the clock and the running stages are new on every call."""
        now = time.time()
        if fresh or now - self.listed_at >= self.list_every_s:
            self.listed_at = now
            self._read_events()
            self.building = self._building()
        built = sum(s == "built" for s in self.status.values())
        snap = Snapshot(total=len(self.planned), done=len(self.status), built=built,
                        reused=len(self.status) - built,
                        elapsed=time.time() - self.start, running=self._running(), building=self.building)
        snap.eta = self._eta()
        return snap

    def _building(self) -> list[str]:
        """What pretrains before the first stage (the tiny ladder's rungs), with its step, and
        when it should end at the pace so far."""
        out = []
        for path in self.store.list_files(self.building_folder):
            try:
                report = self.store.read_json(path)
            except (ValueError, OSError):  # a write in flight
                continue
            step, steps, seconds = report["step"], report["steps"], report["seconds"]
            if step >= steps:
                continue
            eta = f", ETA {clock(seconds * (steps - step) / step)}" if step else ""
            out.append(f"{report['what']}: step {step}/{steps}{eta}")
        return sorted(out)

    def _eta(self) -> float | None:
        """The stages still to build, each at the mean time of the builds of its kind so far (a
        kind not built yet: the slowest kind's), divided by how many builds have run at once.
        None until a training stage has been timed: they dominate, and before one the tables
        built first (a fraction of a second each) would promise an end in seconds."""
        if self.first_event is None or not any(k in self.build_seconds for k in TRAINING_STAGES):
            return None
        done = [t for times in self.build_seconds.values() for t in times]
        wall = time.time() - self.first_event
        mean = {stage: sum(times) / len(times) for stage, times in self.build_seconds.items()}
        slowest = max(mean.values())
        left = sum(mean.get(self.planned[i]["stage"], slowest) for i in self.pending)
        parallel = max(sum(done) / wall, 1.0) if wall > 0 else 1.0
        return left / parallel


def headline(s: Snapshot) -> str:
    eta = f" | ETA {clock(s.eta)}" if s.eta is not None and s.done < s.total else ""
    building = f" | building {'; '.join(s.building)}" if s.building else ""
    return (f"{s.done}/{s.total} stages: {s.built} built, {s.reused} reused | "
            f"elapsed {clock(s.elapsed)}{eta}{building}")


def render(s: Snapshot) -> Group:
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(s.total, 1), completed=s.done, width=20), Text(headline(s)))
    rows = [Text(f"  {trial}: {stage}") for trial, stage in s.running]
    rows += [Text(f"  building {line}") for line in s.building]
    if not s.done and not s.running and not s.building:
        rows.append(Text("  preparing: tiny ladder, Ray Tune, first trials"))
    return Group(bar, *rows)


class SweepProgress:
    """Shows a StageWatcher's snapshots: live on a terminal, else one line per tenth of the
    stages done (a log or CI console keeps a handful of lines, not a redraw per second)."""

    def __init__(self, stream: TextIO, live: bool = True, interval_s: float = 1.0):
        self.console = Console(file=stream, highlight=False)
        self.live = live and self.console.is_terminal
        self.interval_s = interval_s
        self.watcher: StageWatcher | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tenths_shown = -1
        self._building_shown_at = float("-inf")

    def start(self, config: SweepConfig, store: Store, run_id: str, leases: Any) -> None:
        from w2s_ray.plan import plan_stages

        self.watcher = StageWatcher(config, store, run_id, leases, plan_stages(config))
        self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # Not Live's default of taking over sys.stdout / sys.stderr: what the rest of the process
        # prints is chatter for the log, not lines to draw above the display.
        display = Live(console=self.console, auto_refresh=False, redirect_stdout=False,
                       redirect_stderr=False) if self.live else None
        if display:
            display.start()
        try:
            while True:
                stopping = self._stop.wait(self.interval_s)
                try:
                    snap = self.watcher.poll(fresh=stopping)
                except (OSError, ValueError, KeyError) as err:  # a store hiccup: try again
                    log.warning("progress display: %s", err)
                    continue
                if stopping:
                    snap.running = []
                if display:
                    display.update(render(snap), refresh=True)
                else:
                    tenths = snap.done * 10 // max(snap.total, 1)
                    # Pretraining before the first stage takes minutes: a line now and then.
                    building = snap.building and time.time() - self._building_shown_at >= BUILDING_EVERY_S
                    if stopping or building or (tenths > self._tenths_shown and snap.done < snap.total):
                        self._tenths_shown = tenths
                        self._building_shown_at = time.time() if building else self._building_shown_at
                        self.console.print(headline(snap), soft_wrap=True)
                if stopping:
                    return
        finally:
            if display:
                display.stop()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=60)
        self._thread = None
