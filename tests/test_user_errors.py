"""Every class of user error ends before Ray starts, in one line that names the field and what is
allowed there, with exit status 2 and no traceback."""

from __future__ import annotations

import pytest

from w2s_ray.cli import main


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Any attempt to start or join Ray fails the test: the errors must come before it (the
    suite's own Ray instance may already be running, so `is_initialized` would prove nothing)."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called before the user error was reported")

    monkeypatch.setattr(ray, "init", refuse)


def refused(capsys, argv: list[str]) -> str:
    """The CLI's error for `argv`, asserting it refused without a traceback and without Ray."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_a_preset_file_that_does_not_parse(capsys, tmp_path):
    broken = tmp_path / "mine.yaml"
    broken.write_text("name: [tiny\nstorage: runs\n")
    assert f"preset: {broken} is not valid YAML" in refused(capsys, ["--preset", str(broken)])
    broken.write_text("- a list\n- not fields\n")
    assert "must be a mapping of config fields" in refused(capsys, ["--preset", str(broken)])


def test_an_override_that_does_not_parse_or_is_no_section(capsys, tmp_path):
    assert "train.lr: the value '[' is not valid YAML" in refused(capsys, ["--set", "train.lr=["])
    assert "splits.test.x: 'test' is not a section" in refused(capsys, ["--set", "splits.test.x=1"])


@pytest.mark.parametrize(("storage", "expected"), [
    ("http://example.com/runs", "unsupported scheme 'http://'; allowed: a local path or file://, s3://, gs://"),
    ("hdfs://namenode/runs", "unsupported scheme 'hdfs://'"),
    ("/proc/w2s-store", "cannot write in /proc"),
])
def test_storage_the_project_cannot_open(capsys, storage, expected):
    assert expected in refused(capsys, ["--storage", storage, "--dry-run"])


def test_storage_that_is_a_file_or_lies_under_one(capsys, tmp_path):
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder")
    assert "is a file; allowed: a folder" in refused(capsys, ["--storage", str(a_file)])
    assert "is a file, not a folder" in refused(capsys, ["--storage", str(a_file / "sub")])
    assert "is a file" in refused(capsys, ["--storage", f"file://{a_file}"])


def test_storage_in_a_bucket_that_does_not_exist(capsys, s3_server):
    err = refused(capsys, ["--storage", "s3://no-such-bucket/runs", "--dry-run"])
    assert "storage: bucket 'no-such-bucket' of 's3://no-such-bucket/runs' does not exist" in err
    assert main(["--storage", "s3://w2s/runs", "--dry-run"]) == 0  # the conftest's bucket


@pytest.mark.parametrize(("argv", "expected"), [
    (["--seeds", "-1"], "seeds.0: Input should be greater than or equal to 0"),
    (["--seeds", "1", "1"], "seeds: each seed once"),
    (["--set", "data_seed=-3"], "data_seed"),
    (["--set", "splits.test=0"], "splits.test: Input should be greater than 0"),
    (["--preset", "qwen15-paper", "--set", "splits.test=1400"],
     "splits: gsm8k: test = 1400 exceeds the 1319 items of upstream split 'test'"),
])
def test_numbers_that_make_no_sense(capsys, argv, expected):
    assert expected in refused(capsys, [*argv, "--dry-run"])


@pytest.mark.parametrize(("argv", "expected"), [
    (["--num-cpus", "0"], "--num-cpus: 0; allowed: at least 1"),
    (["--num-cpus", "1", "--set", "train.num_workers=2"],
     "train.cpus_per_worker: 2 x 1 CPUs for one train stage of rung 't1', but this machine's Ray has 1"),
    (["--num-cpus", "1", "--set", "inference.cpus_per_actor=1.5"], "inference.cpus_per_actor: 1.5"),
    (["--preset", "qwen15-scale", "--num-cpus", "64"], "train.use_gpu: 1 GPU(s) (the resource plan's)"),
])
def test_resources_a_ray_started_here_could_never_schedule(capsys, monkeypatch, tmp_path, argv, expected):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("w2s_ray.cli.local_gpus", lambda: 0)
    assert expected in refused(capsys, [*argv, "--storage", str(tmp_path)])


def test_a_planned_rung_whose_architecture_cannot_be_read_or_sized(capsys, monkeypatch, tmp_path):
    """`plan: true` on a model the estimate cannot size would otherwise run its stages on the
    preset's own fields (one worker, nothing sharded): refused by name instead."""
    import json

    from huggingface_hub import constants

    moe = tmp_path / "moe"
    moe.mkdir()
    (moe / "config.json").write_text(json.dumps({
        "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16, "vocab_size": 151936,
        "num_local_experts": 8}))
    rungs = f'ladder.rungs=[{{name: a, model: {moe}}}, {{name: b, model: "w2s-test/unseen"}}]'
    argv = ["--preset", "qwen15-scale", "--storage", str(tmp_path / "store"), "--dry-run",
            "--set", rungs, "--set", "pairs=[[a, b]]"]
    err = refused(capsys, argv)
    assert f"train.plan: rung 'a' ({moe}): its config.json describes an architecture the memory " \
           "estimate cannot size" in err and "train.plan false" in err

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    local = tmp_path / "dense"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({k: v for k, v in json.loads((moe / "config.json").read_text()).items()
                                                   if k != "num_local_experts"}))
    argv[argv.index(rungs)] = f'ladder.rungs=[{{name: a, model: {local}}}, {{name: b, model: "w2s-test/unseen"}}]'
    assert "train.plan: rung 'b' (w2s-test/unseen): its config.json was found neither on this machine" \
        in refused(capsys, argv)
