"""Hub rungs: a revision pinned once per sweep, fetched into the store once, trained from there.

No hub is reachable here, so the hub is this machine's Hugging Face cache in its real layout
(`models--org--name/refs/main`, `snapshots/<sha>/`), read offline by huggingface_hub itself.
"""

import shutil

import pytest
from transformers import AutoModelForCausalLM

from tests.test_stages import context, scan_rows, table
from w2s_ray.artifacts import Builder, StageLog, Store, lease_book
from w2s_ray.models import rungs
from w2s_ray.plan import PlanBuilder, PlanStore
from w2s_ray.stages import fetch
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.train import sft

SHA = "0123456789abcdef0123456789abcdef01234567"
RUNGS = '[{name: h1, model: "w2s-test/t1"}, {name: t2, model: "tiny:t2"}]'


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_checkpoint):
    from huggingface_hub import constants

    repo = tmp_path / "hf" / "models--w2s-test--t1"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
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
    assert meta["revision"] == SHA and meta["bytes"] > 0
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
