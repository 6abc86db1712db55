"""What is stored stays what was committed: a damaged artifact is named, never read as complete;
a local checkpoint is named by its files' content."""

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from w2s_ray.artifacts import MARKER, Artifact, Store
from w2s_ray.integrity import DamagedArtifact

TABLE = pd.DataFrame({"uid": [f"u{i}" for i in range(200)], "prompt": ["question"] * 200})


def commit_table(store: Store, art: Artifact) -> str:
    attempt, folder = store.new_attempt(art)
    store.write_table(f"{folder}/table.parquet", TABLE)
    store.commit(art, attempt, {})
    return f"{folder}/table.parquet"


def commit_model(store: Store, art: Artifact, tmp_path: Path) -> str:
    local = tmp_path / f"model-{art.key}"
    local.mkdir()
    (local / "model.safetensors").write_bytes(os.urandom(1 << 20))
    (local / "config.json").write_text("{}")
    attempt, folder = store.new_attempt(art)
    store.upload_dir(local, folder)
    store.commit(art, attempt, {})
    return folder


def test_a_commit_records_every_files_size_and_digest(tmp_path):
    store = Store(str(tmp_path / "store"))
    art = Artifact.make("sft", 1, [], {"m": 1})
    folder = commit_model(store, art, tmp_path)
    content = store.read_json(store.marker(art))["content"]
    assert sorted(content) == ["config.json", "model.safetensors"], "the writer's digest file is folded in"
    import hashlib

    data = (Path(folder) / "model.safetensors").read_bytes()
    assert content["model.safetensors"]["size"] == len(data)
    assert content["model.safetensors"]["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("remote", [False, True])
def test_a_truncated_table_and_an_altered_model_file_are_named_not_read(remote, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path / "cache"))
    root = f"s3://w2s/{tmp_path.name}-damage" if remote else str(tmp_path / "store")
    store = Store(root)
    table_art, model_art = Artifact.make("relabel", 1, [], {"t": 1}), Artifact.make("sft", 2, [], {"m": 1})
    table = commit_table(store, table_art)
    model = commit_model(store, model_art, tmp_path)
    assert Store(root).read_table(f"{Store(root).location(table_art)}/table.parquet").to_dict("list") == TABLE.to_dict("list")

    with store.fs.open_input_stream(table) as f:
        data = f.read()
    with store.fs.open_output_stream(table) as f:  # cut short, as by a full disk or a killed copy
        f.write(data[: len(data) // 2])
    with store.fs.open_input_stream(f"{model}/model.safetensors") as f:
        weights = bytearray(f.read())
    weights[1000] ^= 0xFF  # one byte altered, the size unchanged
    with store.fs.open_output_stream(f"{model}/model.safetensors") as f:
        f.write(bytes(weights))

    fresh = Store(root)  # the next run
    marker = re.escape(fresh.marker(table_art))
    with pytest.raises(DamagedArtifact, match=rf"^{table_art.id} is damaged: table.parquet is [\d,]+ bytes, "
                       rf"committed with [\d,]+\. It is not read\. To rebuild it, delete {marker} and run again"):
        fresh.location(table_art)
    if remote:
        # The listing may not tell a rewrite from the original within the store's mtime
        # resolution; the node's copy checks every digest.
        with pytest.raises(DamagedArtifact, match=rf"^{model_art.id} is damaged: model.safetensors's content "
                           r"differs from its commit \(sha256 \w+, committed \w+\)\. It is not read\."):
            fresh.local_dir(model)
        assert not [p for p in (tmp_path / "cache" / "remote").iterdir() if p.is_dir() and ".tmp-" not in p.name]
    else:
        with pytest.raises(DamagedArtifact, match=rf"^{model_art.id} is damaged: model.safetensors was rewritten "
                           r"after the commit and its content differs"):
            fresh.location(model_art)


def test_a_marker_written_before_digests_is_read_and_a_cut_table_under_it_is_named(tmp_path):
    store = Store(str(tmp_path))
    art = Artifact.make("relabel", 1, [], {"old": 1})
    table = commit_table(store, art)
    record = store.read_json(store.marker(art))
    del record["content"]  # as the previous version wrote it
    store.write_json(store.marker(art), record)
    assert store.read_table(f"{Store(str(tmp_path)).location(art)}/table.parquet").to_dict("list") == TABLE.to_dict("list")
    data = Path(table).read_bytes()
    Path(table).write_bytes(data[:-100])
    with pytest.raises(DamagedArtifact, match=rf"table.parquet is not a readable Parquet table \(.*\)\. If it "
                       rf"belongs to a committed artifact, delete that artifact's {MARKER} and run again"):
        Store(str(tmp_path)).read_table(table)


def committed_in_dry_run(config) -> int:
    from w2s_ray.plan import dry_run

    return int(re.search(r"committed: (\d+)", dry_run(config)).group(1))


def test_a_local_checkpoint_is_keyed_by_its_files_so_overwriting_it_builds_anew(tmp_path, tiny_checkpoint, monkeypatch):
    from w2s_ray.config import load_config
    from w2s_ray.plan import plan_stages

    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    rungs = [{"name": "p0", "model": str(ckpt)}, {"name": "t1", "model": "tiny:t1"}, {"name": "t2", "model": "tiny:t2"}]
    config = load_config("smoke", {"storage": str(tmp_path / "store"), "ladder.rungs": rungs,
                                   "pairs": [["p0", "t2"]], "methods": ["weak", "wts", "ceiling"]})
    store = Store(config.storage)
    stages = plan_stages(config)
    for s in stages:  # as a finished run leaves them
        store.write_json(store.marker(Artifact(s["stage"], s["key"])), {"attempt": "attempt-x"})
    assert committed_in_dry_run(config) == len(stages)

    moved = tmp_path / "moved"
    shutil.copytree(ckpt, moved)
    elsewhere = config.model_copy(update={"ladder": config.ladder.model_copy(update={"rungs": [
        r.model_copy(update={"model": str(moved)}) if r.name == "p0" else r for r in config.ladder.rungs]})})
    assert committed_in_dry_run(elsewhere) == len(stages), "the same files elsewhere: the same artifacts"

    weights = bytearray((ckpt / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF  # retrained in place: same path, same size
    (ckpt / "model.safetensors").write_bytes(bytes(weights))
    from_p0 = [s for s in plan_stages(config) if (s["stage"], s["key"]) not in {(t["stage"], t["key"]) for t in stages}]
    assert from_p0 and {s.get("rung") for s in from_p0} >= {"p0"}
    assert committed_in_dry_run(config) == len(stages) - len(from_p0)
