"""A cloud run rehearsed on one machine: a Ray cluster of a head and two worker nodes (Ray's own
`Cluster`), each node with its own model cache, an S3 store on a real S3 server (moto), and the
smoke sweep submitted through RAY_ADDRESS as `ray job submit` runs it. The head has no CPUs, as
Ray advises for a large cluster, so every stage (the tiny ladder's build too) runs on a worker,
and a worker node is killed while it trains; the sweep must still finish with the single-node run's table, having built no
committed stage twice, and every model must have reached the nodes only through the store: once the ladder's rungs are
in the store, every local copy of the ladder (the building node's, the driver's) is deleted, so a process that read a
rung from a local folder instead would fail or build it again, and each rung must have been downloaded from the store
into a worker node's cache."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from w2s_ray import node_cache
from w2s_ray.artifacts import StageLog, Store
from w2s_ray.ladder import publish

ROOT = Path(__file__).resolve().parents[1]
# Two trials sharing the t1 weak model, so work spreads over both worker nodes.
PAIRS = ["--set", ('ladder.rungs=[{name: t1, model: "tiny:t1"}, {name: t2, model: "tiny:t2"}, '
                   '{name: t2b, model: "tiny:t2"}]'),
         "--set", "pairs=[[t1, t2], [t1, t2b]]"]
CLI = [sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), "--preset", "smoke", *PAIRS]


def training_processes() -> dict[int, str]:
    """pid -> W2S_RAY_CACHE of every Ray worker now running a training stage on this machine."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not cmdline.startswith(b"ray::_fit_local"):
                continue
            env = dict(item.split(b"=", 1) for item in
                       Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:  # the process ended while we looked
            continue
        found[int(pid)] = env.get(b"W2S_RAY_CACHE", b"").decode()
    return found


@pytest.mark.slow
def test_three_node_cluster_on_s3_survives_a_lost_node_with_the_local_table(s3_server, tmp_path):
    local = subprocess.run([*CLI, "--storage", str(tmp_path / "local")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=1200, check=False)
    assert local.returncode == 0, local.stderr[-4000:]
    reference = (tmp_path / "local" / "sweeps" / "smoke" / "results" / "pgr.md").read_text()

    caches = {name: tmp_path / f"cache-{name}" for name in ("driver", "head", "w1", "w2")}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "env_vars": {"W2S_RAY_CACHE": str(caches["head"])}})
    try:
        workers = {str(caches[n]): cluster.add_node(num_cpus=2, env_vars={
            "W2S_RAY_CACHE": str(caches[n])}) for n in ("w1", "w2")}
        cluster.wait_for_nodes()
        storage = f"s3://w2s/{tmp_path.name}/store"
        store = Store(storage)
        rungs = [publish.artifact(name) for name in ("t1", "t2")]
        start = time.time()
        driver = subprocess.Popen([*CLI, "--storage", storage], cwd=tmp_path, text=True,
                                  env={**os.environ, "RAY_ADDRESS": cluster.address,
                                       "W2S_RAY_CACHE": str(caches["driver"])},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        killed, ladders_deleted = None, False
        while driver.poll() is None and killed is None and time.time() - start < 1200:
            # The trials start only after the ladder is committed, so none has loaded a rung yet.
            if not ladders_deleted and all(store.committed(r) for r in rungs):
                for folder in caches.values():
                    shutil.rmtree(folder / "tiny-ladder", ignore_errors=True)
                ladders_deleted = True
            # Once its model has come from the store, so the kill lands mid-training.
            on_workers = [c for c in training_processes().values()
                          if c in workers and (Path(c) / "remote" / node_cache.DOWNLOADS).exists()]
            if on_workers:
                killed = on_workers[0]
                cluster.remove_node(workers[killed], allow_graceful=False)
            time.sleep(0.1)
        out, err = driver.communicate(timeout=1500)
        wall = time.time() - start
    finally:
        cluster.shutdown()
    assert driver.returncode == 0, err[-4000:]

    assert ladders_deleted, "the local ladders were deleted before any trial started"
    rebuilt = [str(folder) for folder in caches.values() if (folder / "tiny-ladder").exists()]
    assert not rebuilt, f"a process built the ladder again instead of reading it from the store: {rebuilt}"
    fetched = {name: node_cache.downloads(folder / "remote") for name, folder in caches.items()}
    assert sum(bool(d) for d in fetched.values()) >= 2, f"downloads per node: {fetched}"
    assert not fetched["driver"] and not fetched["head"], "only the worker nodes load models"
    for rung in rungs:
        copies = [(name, d["entry"]) for name, events in fetched.items() for d in events
                  if d["source"] == store.location(rung) and not d["entry"].endswith("-noweights")]
        assert copies, f"{rung.id}: no node downloaded its weights from the store: {fetched}"
        assert all((caches[name] / "remote" / entry / "model.safetensors").is_file() for name, entry in copies)

    assert killed is not None, "a worker node was killed while it trained"
    table = store.fs.open_input_stream(store.path("sweeps", "smoke", "results", "pgr.md")).read()
    assert table.decode() == reference, "the cluster run's table equals the single-node run's"
    assert reference.splitlines()[2] in out
    log = StageLog(store, "smoke", "").frame()
    built = log[log["status"] == "built"]
    assert not built.duplicated(["stage", "key"]).any(), "no committed stage was built twice"
    print(f"rehearsal: {wall:.0f}s; killed the node with cache {killed}; downloads per node: "
          f"{ {n: len(d) for n, d in fetched.items()} }")
