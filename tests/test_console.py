"""The sweep's console: chatter to the run's log file, and the progress display's counts."""

import os
import subprocess

import pytest
import ray

from w2s_ray.artifacts import Artifact, StageLog, Store, lease_book
from w2s_ray.config import load_config
from w2s_ray.console import chatter_to
from w2s_ray.progress import StageWatcher, headline


def say_everything(console) -> None:
    print("python print", flush=True)
    os.write(2, b"raw fd 2\n")
    subprocess.run(["sh", "-c", "echo from a child process"], check=True)
    print("progress line", file=console.out)


def test_chatter_goes_to_the_log_and_the_console_keeps_its_own_stream(tmp_path, capfd):
    log = tmp_path / "run" / "console.log"
    with chatter_to(log) as console:
        say_everything(console)
    captured = capfd.readouterr()
    assert captured.out == "progress line\n" and captured.err == ""
    text = log.read_text()
    assert "python print" in text and "raw fd 2" in text and "from a child process" in text
    assert "progress line" not in text
    print("after")  # the process's own stdout is back
    assert capfd.readouterr().out == "after\n"


def test_verbose_shows_the_chatter_and_still_logs_it(tmp_path, capfd):
    log = tmp_path / "console.log"
    with chatter_to(log, verbose=True) as console:
        say_everything(console)
    captured = capfd.readouterr()
    shown = captured.out + captured.err
    for line in ("python print", "raw fd 2", "from a child process", "progress line"):
        assert line in shown
    text = log.read_text()
    assert "python print" in text and "raw fd 2" in text and "from a child process" in text


def test_an_error_inside_reaches_the_console_in_full_and_the_log(tmp_path, capfd):
    log = tmp_path / "console.log"

    def fail() -> None:
        raise RuntimeError("the stage broke")

    with pytest.raises(RuntimeError, match="the stage broke"), chatter_to(log):
        fail()
    assert "Traceback" in log.read_text() and "in fail" in log.read_text()
    os.write(2, b"back on the terminal\n")
    assert "back on the terminal" in capfd.readouterr().err


def test_progress_counts_each_planned_stage_once_and_names_what_each_trial_builds(ray_local, tmp_path):
    config = load_config("smoke", {"storage": str(tmp_path)})
    store = Store(config.storage)
    planned = [{"stage": "splits", "key": "s1", "tag": None},
               {"stage": "sft", "key": "w1", "tag": "weak", "rung": "t1"},
               {"stage": "sft", "key": "x1", "tag": "wts", "rung": "t2"},
               {"stage": "generate", "key": "g1", "tag": "evaluate", "rung": "t2"}]
    committed = Artifact("splits", "s1")
    store.commit(committed, "attempt-0", {})
    leases = lease_book("progress-test")
    watcher = StageWatcher(config, store, "run1", leases, planned)
    assert headline(watcher.poll()).startswith("0/4 stages: 0 built, 0 reused")

    log, other = StageLog(store, config.name, "run1"), StageLog(store, config.name, "run0")
    log.record(committed, "reused", 0.0)
    log.record(committed, "reused", 0.0)  # a second trial reusing it: still one stage
    log.record(Artifact("sft", "w1"), "built", 30.0, tag="weak")
    log.record(Artifact("ladder", "t1"), "built", 5.0)  # not in the plan
    other.record(Artifact("sft", "x1"), "built", 30.0, tag="wts")  # another run's
    assert ray.get(leases.acquire.remote("sft/x1", "run1-t1-t2-0", 60))
    watcher.list_every_s = 3600.0  # a remote store's pace: the folder is not listed on every redraw
    assert watcher.poll().done == 0
    snap = watcher.poll(fresh=True)
    assert (snap.done, snap.built, snap.reused, snap.total) == (2, 1, 1, 4)
    assert snap.running == [("t1 -> t2 seed 0", "sft wts (t2)")]
    assert snap.eta is not None and snap.eta > 0, "two builds left, one sft already timed"
    ray.get(leases.release.remote("sft/x1", "run1-t1-t2-0"))
    log.record(Artifact("sft", "x1"), "built", 30.0, tag="wts")
    log.record(Artifact("generate", "g1"), "built", 3.0, tag="evaluate")
    snap = watcher.poll(fresh=True)
    assert (snap.done, snap.built, snap.running) == (4, 3, [])
    assert "ETA" not in headline(snap)


def test_progress_says_what_pretrains_before_the_first_stage_and_how_far(ray_local, tmp_path):
    config = load_config("smoke", {"storage": str(tmp_path)})
    store = Store(config.storage)
    watcher = StageWatcher(config, store, "run1", lease_book("progress-building"), [])
    folder = StageLog(store, config.name, "run1").building_folder()
    assert watcher.poll(fresh=True).building == []
    store.write_json(f"{folder}/ladder-t4.json", {"what": "tiny ladder t4", "step": 500, "steps": 2000,
                                                  "seconds": 50.0})
    store.write_json(f"{folder}/ladder-t1.json", {"what": "tiny ladder t1", "step": 500, "steps": 500,
                                                  "seconds": 29.0})
    snap = watcher.poll(fresh=True)
    assert snap.building == ["tiny ladder t4: step 500/2000, ETA 2:30"], "t1 is done: not shown"
    assert headline(snap).endswith("| building tiny ladder t4: step 500/2000, ETA 2:30")
