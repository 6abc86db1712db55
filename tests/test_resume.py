"""Resuming after the driver dies: Ray Train continues from its last checkpoint; a rerun sweep
reuses every committed stage and ends with the table an uninterrupted run gives."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.test_stages import context, scan_rows, table
from w2s_ray.artifacts import StageLog, Store
from w2s_ray.models.location import ModelRef
from w2s_ray.stages.train import sft

ROOT = Path(__file__).resolve().parents[1]
LONG_RUN = {"train.num_workers": 1, "train.cpus_per_worker": 0.5, "train.epochs": 60,
            "train.lr": 1e-3, "train.batch_size": 8, "train.checkpoint_every": 10,
            "train.checkpoint_min_steps": 0}

TRAIN_DRIVER = """
import sys, ray
from tests.test_stages import context, scan_rows, table
from tests.test_resume import LONG_RUN
from w2s_ray.models.location import ModelRef
from w2s_ray.stages.train import sft
ray.init(num_cpus=2, include_dashboard=False, namespace="w2s_ray")
ctx = context(sys.argv[1], **LONG_RUN, **{"train.checkpoint_to": sys.argv[3]})
sft(ctx, ModelRef(id="base:test", source=sys.argv[2]), table(ctx, scan_rows(16), "scan"))
"""


def start_in_own_session(*args: str) -> subprocess.Popen:
    """A driver whose whole process tree (the Ray instance it starts included) can be killed."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(sid)], capture_output=True, text=True,
                         check=False).stdout
    return [int(pid) for pid, stat in (line.split() for line in out.splitlines()) if "Z" not in stat]


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything in its session: Ray's own processes (GCS, raylet,
    workers) form process groups of their own but stay in the session."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while left := session_pids(proc.pid):
        assert time.time() < deadline, f"processes left in the killed driver's session: {left}"
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)


def wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the driver ended (code {proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_to", ["local", "store"])
def test_a_killed_training_run_resumes_from_its_last_checkpoint(ray_local, tmp_path, tiny_checkpoint,
                                                               checkpoint_to):
    killed = tmp_path / "killed"
    proc = start_in_own_session("-c", TRAIN_DRIVER, str(killed), tiny_checkpoint, checkpoint_to)
    # Ray Train has registered a checkpoint once its snapshot of the run is written.
    wait_for(lambda: any(killed.glob("ray_train/sft-*/checkpoint_manager_snapshot.json")), "a checkpoint", proc)
    kill_session(proc)

    base = ModelRef(id="base:test", source=tiny_checkpoint)
    resumed_ctx = context(killed, **LONG_RUN, **{"train.checkpoint_to": checkpoint_to})
    resumed = sft(resumed_ctx, base, table(resumed_ctx, scan_rows(16), "scan"))
    meta = resumed_ctx.store.read_json(resumed_ctx.store.marker(resumed))
    assert 0 < meta["resumed_at_step"] < meta["steps"]

    whole_ctx = context(tmp_path / "whole", **LONG_RUN)
    whole = sft(whole_ctx, base, table(whole_ctx, scan_rows(16), "scan"))
    assert whole == resumed
    assert resumed_ctx.store.read_json(resumed_ctx.store.marker(resumed))["losses"] == pytest.approx(
        whole_ctx.store.read_json(whole_ctx.store.marker(whole))["losses"], rel=1e-5)
    a = AutoModelForCausalLM.from_pretrained(resumed_ctx.store.location(resumed)).state_dict()
    b = AutoModelForCausalLM.from_pretrained(whole_ctx.store.location(whole)).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_sweep_killed_after_a_committed_stage_reruns_to_the_same_table(tmp_path):
    args = [str(ROOT / "sweeps" / "scale_grid.py"), "--preset", "smoke", "--num-cpus", "2"]
    killed = Store(str(tmp_path / "killed"))
    log = StageLog(killed, "smoke", "")

    def trained_one() -> bool:
        frame = log.frame()
        return bool(len(frame)) and ((frame["stage"] == "sft") & (frame["status"] == "built")).any()

    proc = start_in_own_session(*args, "--storage", killed.root)
    wait_for(trained_one, "a committed training stage", proc)
    kill_session(proc)
    before = log.frame()
    subprocess.run([sys.executable, *args, "--storage", killed.root], cwd=ROOT, check=True,
                   capture_output=True, timeout=1200)
    subprocess.run([sys.executable, *args, "--storage", str(tmp_path / "whole")], cwd=ROOT, check=True,
                   capture_output=True, timeout=1200)

    after = log.frame()
    built = after[after["status"] == "built"]
    assert not built.duplicated(["stage", "key"]).any(), "a committed stage was executed twice"
    rerun = after[~after["run_id"].isin(before["run_id"])]
    committed_before = set(before.loc[before["status"] == "built", "key"])
    assert set(rerun.loc[rerun["key"].isin(committed_before), "status"]) == {"reused"}
    whole = Store(str(tmp_path / "whole"))
    results = "sweeps/smoke/results/rows.parquet"
    pd.testing.assert_frame_equal(killed.read_table(killed.path(results)),
                                  whole.read_table(whole.path(results)))
    assert (tmp_path / "killed/sweeps/smoke/results/pgr.md").read_text() == \
        (tmp_path / "whole/sweeps/smoke/results/pgr.md").read_text()

    # The planner's keys are the sweep's: a dry run over the finished store finds all committed.
    plan = subprocess.run([sys.executable, *args, "--storage", whole.root, "--dry-run"], cwd=ROOT,
                          check=True, capture_output=True, text=True, timeout=300).stdout
    unique, committed = re.search(r"unique stages: (\d+) .*; committed: (\d+)", plan).groups()
    assert int(unique) > 10 and committed == unique


def train_worker_pids() -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                pids.append(int(pid))
    return pids


@pytest.mark.slow
def test_a_restarted_fsdp_group_reads_each_ranks_own_shards_from_s3(ray_local, s3_server, tmp_path,
                                                                    tiny_checkpoint):
    ctx = context(tmp_path, storage=f"s3://w2s/{tmp_path.name}/store", **{
        **LONG_RUN, "train.epochs": 20, "train.num_workers": 2, "train.strategy": "fsdp"})
    data = table(ctx, scan_rows(16), "scan")
    killed = []

    def kill_a_worker_after_the_first_checkpoint() -> None:
        runs = ctx.store.path("ray_train")
        deadline = time.time() + 900
        while time.time() < deadline and not killed:
            snapshots = [i for i in ctx.store.fs.get_file_info(pafs.FileSelector(
                runs, recursive=True, allow_not_found=True))
                if i.base_name == "checkpoint_manager_snapshot.json"]
            workers = train_worker_pids()
            if snapshots and workers:
                os.kill(workers[-1], signal.SIGKILL)
                killed.append(workers[-1])
            time.sleep(0.5)

    watcher = threading.Thread(target=kill_a_worker_after_the_first_checkpoint, daemon=True)
    watcher.start()
    art = sft(ctx, ModelRef(id="base:test", source=tiny_checkpoint), data)
    watcher.join(timeout=5)
    assert killed, "a worker was killed after the first checkpoint"
    meta = ctx.store.read_json(ctx.store.marker(art))
    assert 0 < meta["resumed_at_step"] < meta["steps"], "the restarted group resumed mid-run"

    reads = meta["resume_reads"]
    assert len(reads) == 2
    for rank, requested in enumerate(reads):
        shards = {f: n for f, n in requested.items() if not f.endswith("(replicated)")}
        assert list(shards) == [f"__{rank}_0.distcp"], f"rank {rank} read other shards: {requested}"
    own = [r[f"__{rank}_0.distcp"] for rank, r in enumerate(reads)]
    assert own[0] == pytest.approx(own[1], rel=0.2), "each rank read its half of the shards"
