"""FSDP and DDP through Ray Train on 2 CPU workers (gloo), on a store addressed by a file:// URI."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.test_stages import context, scan_rows, table
from w2s_ray.models.location import ModelRef
from w2s_ray.stages.train import sft

TWO_WORKERS = {"train.num_workers": 2, "train.cpus_per_worker": 0.5, "train.epochs": 4,
               "train.lr": 5e-3, "train.batch_size": 8, "train.grad_accum": 2}


@pytest.mark.slow
def test_fsdp_gives_ddps_loss_curve_and_a_loadable_model(ray_local, tmp_path, tiny_checkpoint):
    curves, weights = {}, {}
    for strategy, extra in [("ddp", {}), ("fsdp", {"train.activation_checkpointing": True})]:
        ctx = context(tmp_path, storage=f"file://{tmp_path}/{strategy}",
                      **{**TWO_WORKERS, "train.strategy": strategy, **extra})
        art = sft(ctx, ModelRef(id="base:test", source=tiny_checkpoint), table(ctx, scan_rows(16), "scan"))
        meta = ctx.store.read_json(ctx.store.marker(art))
        curves[strategy] = meta["losses"]
        model = AutoModelForCausalLM.from_pretrained(ctx.store.location(art))
        weights[strategy] = model.model.layers[1].mlp.down_proj.weight
        assert (tmp_path / strategy / "ray_train").is_dir(), "Ray Train's storage shares the store's root"
        assert not (tmp_path / strategy / "ray_train" / f"sft-{art.key}").exists(), "checkpoints dropped once committed"
    assert len(curves["ddp"]) == 8 and curves["ddp"][-1] < 0.8 * curves["ddp"][0]
    assert curves["fsdp"] == pytest.approx(curves["ddp"], rel=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).model.layers[1].mlp.down_proj.weight
    assert not torch.allclose(weights["fsdp"], base)
    torch.testing.assert_close(weights["fsdp"], weights["ddp"], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_a_tiny_sweep_trains_every_stage_on_two_fsdp_workers(tmp_path):
    from tests.test_sweep import run_cli
    from w2s_ray.artifacts import StageLog, Store

    store = Store(f"file://{tmp_path}/store")
    out = run_cli("--preset", "smoke", "--storage", store.root, "--num-cpus", "2",
                  "--set", "train.num_workers=2", "--set", "train.cpus_per_worker=0.5",
                  "--set", "train.strategy=fsdp")
    assert "t1 -> t2" in out
    built = StageLog(store, "smoke", "").frame().query("stage == 'sft' and status == 'built'")
    assert sorted(built["tag"]) == ["ceiling", "weak", "wts"]
    for key in built["key"]:
        meta = store.read_json(store.path("artifacts", "sft", key, "COMMITTED.json"))
        assert meta["resumed_at_step"] == 0 and len(meta["losses"]) == meta["steps"]
