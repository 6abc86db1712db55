"""Hub rungs: a revision pinned once per sweep, fetched into the store once, trained from there.

No hub is reachable here, so the hub is this machine's Hugging Face cache in its real layout
(`models--org--name/refs/main`, `snapshots/<sha>/`), read offline by huggingface_hub itself.
"""

import hashlib
import shutil
import socket
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from tests.test_stages import context, scan_rows, table
from w2s_ray import integrity
from w2s_ray.artifacts import Builder, StageLog, Store, lease_book
from w2s_ray.models import rungs
from w2s_ray.plan import PlanBuilder, PlanStore
from w2s_ray.runtime import nodes
from w2s_ray.stages import fetch
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.train import sft

SHA = "0123456789abcdef0123456789abcdef01234567"
RUNGS = '[{name: h1, model: "w2s-test/t1"}, {name: t2, model: "tiny:t2"}]'


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_checkpoint):
    """The hub as this machine's cache, for the driver and for the Ray task that downloads (a
    node's worker sees its cache through its environment)."""
    from huggingface_hub import constants

    repo = tmp_path / "hf" / "models--w2s-test--t1"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    env = {"HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    on_gpu_node = nodes.on_gpu_node
    monkeypatch.setattr(nodes, "on_gpu_node", lambda **o: on_gpu_node(runtime_env={"env_vars": env}, **o))
    return repo


def test_a_hub_rung_is_pinned_then_fetched_into_the_store_once_and_trained_from_there(
        ray_local, tmp_path, hub_cache):
    ctx = context(tmp_path / "store", **{"ladder.rungs": RUNGS, "train.epochs": 1})
    assert rungs.kind(ctx.config.ladder.rung("h1")) == "hub" and rungs.kind(ctx.config.ladder.rung("t2")) == "tiny"
    ctx.config = fetch.pin_revisions(ctx.config, fetch.resolve_revision)
    spec = ctx.config.ladder.rung("h1")
    assert spec.revision == SHA, "offline, the cache's refs/main names the revision"
    base = ctx.base("h1")
    assert base.stored and base.rung == "h1" and base.id == fetch.artifact(spec).id
    meta = ctx.store.read_json(ctx.store.marker(base.artifact))
    assert meta["revision"] == SHA and meta["bytes"] > 0 and meta["node"] == socket.gethostname()
    assert (tmp_path / "store" / "artifacts" / "fetch").is_dir()
    again = Builder(ctx.store, StageLog(ctx.store, "smoke", "again"), lease_book("stages"), "other")
    StageContext(ctx.config, ctx.store, again, seed=0).base("h1")
    log = StageLog(ctx.store, "smoke", "again").frame()
    assert log[log["run_id"] == "again"][["stage", "status"]].values.tolist() == [["fetch", "reused"]]

    trained = sft(ctx, base, table(ctx, scan_rows(8), "scan"))
    model = AutoModelForCausalLM.from_pretrained(ctx.store.location(trained))
    assert model.config.model_type == "qwen2"


def test_a_trained_models_key_names_the_revision_it_started_from(tmp_path, hub_cache):
    keys = []
    for revision in (SHA, "f" * 40):
        ctx = context_for_plan(tmp_path, revision)
        keys.append(sft(ctx, ctx.base("h1"), table(ctx, scan_rows(8), "scan")).key)
    assert keys[0] != keys[1]


def context_for_plan(tmp_path, revision: str) -> StageContext:
    from w2s_ray.config import load_config

    config = load_config("smoke", {"storage": str(tmp_path), "ladder.rungs": RUNGS})
    config = fetch.pin_revisions(config, lambda rung: revision)
    store = PlanStore(config.storage)
    return StageContext(config, store, PlanBuilder(Store(config.storage)), seed=0)


def test_an_unresolvable_revision_is_refused_by_field_before_anything_runs(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = context_for_plan(tmp_path, SHA).config.ladder.rung("h1").model_copy(update={"revision": None})
    with pytest.raises(fetch.RevisionError, match=r"ladder.rungs\[h1\].revision: w2s-test/t1 .*set a commit sha"):
        fetch.resolve_revision(config)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A hub whose listing (`fetch.hub_files`) is given by the test and whose files the fake
    `hf_hub_download` writes; the local cache is empty, so the fetch must download."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    listing, downloaded = [], []

    def hf_hub_download(model, name, revision, local_dir):
        downloaded.append(name)
        path = Path(local_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"w" * dict(listing)[name])
        return str(path)

    monkeypatch.setattr(fetch, "hub_files", lambda model, revision: listing)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return listing, downloaded


def test_a_snapshot_that_does_not_fit_the_nodes_disk_stops_before_any_download(tmp_path, offline_hub):
    listing, downloaded = offline_hub
    free = shutil.disk_usage(tmp_path).free
    listing += [("config.json", 100), ("model-00001-of-00002.safetensors", free),
                ("model-00002-of-00002.safetensors", free // 2)]
    store = Store(str(tmp_path / "store"))
    folder = store.path("artifacts", "fetch", "k", "attempt-1")
    with pytest.raises(fetch.DiskSpaceError) as err:
        fetch.download(store, "w2s-test/big", SHA, folder)
    message = str(err.value)
    need = free + free // 2 + 100
    assert f"w2s-test/big@{SHA[:12]}" in message and f"needs {need:,} bytes" in message
    shown_free = int(message.split(" has ")[1].split(" bytes")[0].replace(",", ""))
    assert 0 < shown_free < need and abs(shown_free - free) < 1e9, "the disk's real free space"
    assert downloaded == [] and not (tmp_path / "store").exists()


def test_a_snapshot_goes_into_the_store_file_by_file_leaving_no_scratch(tmp_path, offline_hub, monkeypatch):
    listing, downloaded = offline_hub
    listing += [("config.json", 100), ("model.safetensors", 5000), ("sub/tokenizer.json", 70)]
    store = Store(str(tmp_path / "store"))
    folder = store.path("artifacts", "fetch", "k", "attempt-1")
    meta = fetch.download(store, "w2s-test/small", SHA, folder)
    assert downloaded == [name for name, _ in listing]
    assert meta["files"] == 3 and meta["bytes"] == 5170 and meta["node"] == socket.gethostname()
    stored = {p.relative_to(folder).as_posix(): p.stat().st_size for p in Path(folder).rglob("*")
              if p.is_file() and not p.name.startswith(integrity.DIGESTS)}
    assert stored == dict(listing)
    # hashed on the node as the files passed through, so the commit record reads nothing back
    monkeypatch.setattr(integrity, "sha256_stream", lambda stream: pytest.fail("a stored file was read back"))
    assert store.content(folder) == {
        name: {"size": size, "sha256": hashlib.sha256(b"w" * size).hexdigest(),
               "mtime_ns": (Path(folder) / name).stat().st_mtime_ns} for name, size in listing}
    assert not list(tmp_path.glob("w2s-fetch-*")), "the scratch folder is removed"


def test_the_download_asks_for_a_gpu_node_which_the_autoscaler_launches_and_the_head_lacks():
    from functools import partial

    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import (
        _default_utilization_scorer,
        get_nodes_for,
    )
    from ray.autoscaler._private.util import prepare_config

    from tests.test_cluster import FILES, load

    options = nodes.on_gpu_node()
    demand = {**options["resources"], "CPU": options["num_cpus"]}
    scorer = partial(_default_utilization_scorer,
                     node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    for name in FILES:
        raw = prepare_config(load(name))
        types = raw["available_node_types"]
        carriers = {k for k, t in types.items() if t["resources"].get(nodes.GPU_NODE)}
        assert carriers == {k for k, t in types.items() if t["resources"].get("GPU")}, name
        added, left = get_nodes_for(types, {}, raw["head_node_type"], raw["max_workers"], [demand], scorer)
        assert not left and set(dict(added)) <= carriers and dict(added), f"{name}: {added}"


def test_a_ray_started_on_one_machine_is_its_own_gpu_node(ray_local):
    import ray

    assigned = ray.get(ray.remote(lambda: ray.get_runtime_context().get_assigned_resources())
                       .options(**nodes.on_gpu_node()).remote())
    assert assigned.get(nodes.GPU_NODE) == nodes.SHARE
    assert nodes.local_resources() == {nodes.GPU_NODE: 1.0}
