import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import ray

from w2s_ray.artifacts import Artifact, Builder, StageLog, Store, lease_book


def make_builder(store: Store, holder: str, run_id: str = "run") -> Builder:
    return Builder(store, StageLog(store, "t", run_id), lease_book("test-" + store.root[-12:]), holder)


def test_key_depends_on_stage_version_inputs_and_params():
    base = Artifact.make("sft", 1, ["a"], {"lr": 1})
    assert base == Artifact.make("sft", 1, ["a"], {"lr": 1})
    assert len({base, Artifact.make("sft", 2, ["a"], {"lr": 1}), Artifact.make("sft", 1, ["b"], {"lr": 1}),
                Artifact.make("sft", 1, ["a"], {"lr": 2}), Artifact.make("gen", 1, ["a"], {"lr": 1})}) == 5


KILLED_BUILD = """
import os, signal, sys
from w2s_ray.artifacts import Artifact, Store
store = Store(sys.argv[1])
art = Artifact.make("sft", 1, [], {"x": 1})
attempt, folder = store.new_attempt(art)
with store.fs.open_output_stream(folder + "/model.bin") as f:
    f.write(b"half a model")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("uri", [False, True])
def test_build_killed_before_commit_is_never_reused(ray_local, tmp_path, uri):
    root = f"file://{tmp_path}" if uri else str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", KILLED_BUILD, root], check=False)
    assert proc.returncode == -9
    store = Store(root)
    art = Artifact.make("sft", 1, [], {"x": 1})
    assert not store.committed(art)
    killed = list((tmp_path / "artifacts" / "sft" / art.key).iterdir())
    assert len(killed) == 1

    def build(folder: str) -> dict:
        with store.fs.open_output_stream(folder + "/model.bin") as f:
            f.write(b"whole model")
        return {"ok": True}

    make_builder(store, "h").ensure(art, build)
    assert store.committed(art)
    location = store.location(art)
    assert not location.endswith(killed[0].name)
    with store.fs.open_input_stream(location + "/model.bin") as f:
        assert f.read() == b"whole model"


def test_committed_artifact_is_reused_not_rebuilt(ray_local, tmp_path):
    store = Store(str(tmp_path))
    art = Artifact.make("gen", 1, [], {})
    calls = []
    make_builder(store, "a", "run1").ensure(art, lambda folder: calls.append(folder) or {})
    make_builder(store, "b", "run2").ensure(art, lambda folder: calls.append(folder) or {})
    assert len(calls) == 1
    log = StageLog(store, "t", "x").frame()
    assert sorted(zip(log["run_id"], log["status"])) == [("run1", "built"), ("run2", "reused")]


def test_concurrent_builders_of_one_key_build_it_once(ray_local, tmp_path):
    store = Store(str(tmp_path))
    art = Artifact.make("sft", 1, ["shared-weak"], {})
    calls = []

    def slow_build(folder: str) -> dict:
        calls.append(folder)
        time.sleep(3)
        store.write_table(folder + "/t.parquet", pd.DataFrame({"a": [1]}))
        return {}

    threads = [threading.Thread(target=make_builder(store, f"trial-{i}").ensure, args=(art, slow_build))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert store.read_table(store.location(art) + "/t.parquet")["a"].tolist() == [1]
    assert sorted(StageLog(store, "t", "").frame()["status"]) == ["built", "reused"]


def test_failed_build_releases_its_lease_and_commits_nothing(ray_local, tmp_path):
    store = Store(str(tmp_path))
    art = Artifact.make("sft", 1, ["boom"], {})

    def failing(folder: str) -> dict:
        raise RuntimeError("out of memory")

    builder = make_builder(store, "first")
    with pytest.raises(RuntimeError):
        builder.ensure(art, failing)
    assert not store.committed(art)
    builder.ensure(art, lambda folder: {})
    assert store.committed(art)


def test_the_lease_book_outlives_the_placement_group_of_the_trial_that_made_it(ray_local):
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 0.01}])
    ray.get(pg.ready())

    @ray.remote(num_cpus=0.01)
    def like_a_trial() -> bool:
        return ray.get(lease_book("pg-test").acquire.remote("k", "trial-1", 60.0))

    inside = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    assert ray.get(like_a_trial.options(scheduling_strategy=inside).remote())
    remove_placement_group(pg)
    time.sleep(1)
    assert not ray.get(lease_book("pg-test").acquire.remote("k", "trial-2", 60.0), timeout=30)
