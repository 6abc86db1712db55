"""One objective whatever the layout, gradients that stay sharded under FSDP, and an out-of-memory
error that is not retried: through Ray Train on CPU workers (gloo), as a stage runs them."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.test_stages import context, scan_rows, table
from w2s_ray.config import TrainHParams
from w2s_ray.models.location import ModelLocation, ModelRef
from w2s_ray.runtime.ray_train import StageOutOfMemory, run_training
from w2s_ray.runtime.tasks import SFTTask
from w2s_ray.stages.data import TABLE
from w2s_ray.stages.train import sft, train

# Ray Train's workers unpickle the probes below; this module is not importable there by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def grad_bytes() -> int:
    """Bytes held in `.grad` by every parameter of this process, FSDP's unsharded ones included
    (a DTensor gradient counts its local shard)."""
    total = 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.nn.Parameter) and obj.grad is not None:
            grad = obj.grad.to_local() if hasattr(obj.grad, "to_local") else obj.grad
            total += grad.numel() * grad.element_size()
    return total


class GradProbe(SFTTask):
    """SFT that records, before each micro-batch, the gradient bytes its rank holds: what the
    micro-batches of the step so far left behind."""

    def __init__(self, folder: str):
        self.folder = folder

    def loss(self, model, batch, total):
        path = Path(self.folder) / f"rank{torch.distributed.get_rank()}.json"
        seen = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*seen, grad_bytes()]))
        return super().loss(model, batch, total)


@pytest.mark.slow
def test_fsdp_accumulation_keeps_each_ranks_gradients_sharded(ray_local, tmp_path, tiny_checkpoint):
    ctx = context(tmp_path)
    data = table(ctx, scan_rows(16), "scan")
    hp = TrainHParams(num_workers=2, cpus_per_worker=0.5, strategy="fsdp", grad_accum=4, batch_size=16,
                      epochs=2, lr=1e-3)
    probes = tmp_path / "probes"
    probes.mkdir()
    run_training(GradProbe(str(probes)), ModelLocation(ctx.store.root, tiny_checkpoint),
                 f"{ctx.store.location(data)}/{TABLE}", ctx.store.path("out"), hp, 0, "probe")
    full = 4 * sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_checkpoint).parameters())
    for rank in (0, 1):
        seen = json.loads((probes / f"rank{rank}.json").read_text())
        assert len(seen) == 2 * 4, "two steps of four micro-batches"
        held = [b for b in seen if b]  # a step's first micro-batch starts with no gradient
        assert len(held) == 2 * 3
        # Half of the model's fp32 gradient per rank (its shard, rounding aside); skipping the
        # reduce-scatter would hold all of it, unsharded, until the step's last micro-batch.
        assert max(held) <= 0.55 * full and min(held) >= 0.45 * full, (held, full)


def varied_rows(n: int) -> pd.DataFrame:
    """Rows whose answers differ in length (1 to 4 words), so a token mean per micro-batch and a
    token mean per global batch differ."""
    rows = scan_rows(4 * -(-n // 4)).iloc[:n]
    words = ["JUMP", "JUMP LTURN", "WALK WALK WALK", "LOOK RTURN LOOK RTURN"]
    return rows.assign(label_text=[words[i % 3] for i in range(n)])


def reward_rows(n: int) -> pd.DataFrame:
    """Class-imbalanced reward rows (3 positives per negative): the balance weights matter."""
    rows = varied_rows(n)
    return rows.assign(target=[int(i % 4 != 0) for i in range(n)])[
        ["uid", "capability", "prompt", "label_text", "target"]]


LAYOUTS = {  # (workers, strategy, accumulation): micro-batches of 8, 2 and 4 rows of an 8-row batch
    "1 worker, accumulation 1": {"train.num_workers": 0, "train.grad_accum": 1},
    "1 worker, accumulation 4": {"train.num_workers": 0, "train.grad_accum": 4},
    "2 FSDP workers, accumulation 2": {"train.num_workers": 2, "train.cpus_per_worker": 0.5,
                                       "train.strategy": "fsdp", "train.grad_accum": 2},
}


@pytest.mark.slow
def test_one_objective_whatever_the_layout(ray_local, tmp_path, tiny_checkpoint):
    """The same rows for 3 steps under three layouts end in the same weights (fp32, 1e-5
    relative), for the supervised loss and the reward model's class-balanced one. 17 rows in
    batches of 8 end in a 1-row batch, which one of two workers has no row of. That is why a
    model's key leaves the layout out: the three runs share one key."""
    weights: dict[str, dict[str, torch.Tensor]] = {"sft": {}, "reward_model": {}}
    keys: dict[str, set[str]] = {"sft": set(), "reward_model": set()}
    for name, layout in LAYOUTS.items():
        ctx = context(tmp_path / name.replace(" ", "-").replace(",", ""),
                      **{"train.batch_size": 8, "train.epochs": 1, "train.lr": 1e-2, **layout})
        base = ModelRef(id="base:test", source=tiny_checkpoint)
        lm = sft(ctx, base, table(ctx, varied_rows(17), "sft"))
        rm = train(ctx, base, table(ctx, reward_rows(17), "reward"), "reward_model", "reward", tag="reward")
        assert ctx.store.read_json(ctx.store.marker(lm))["steps"] == 3
        keys["sft"].add(lm.key)
        keys["reward_model"].add(rm.key)
        weights["sft"][name] = AutoModelForCausalLM.from_pretrained(ctx.store.location(lm)).state_dict()
        weights["reward_model"][name] = AutoModelForSequenceClassification.from_pretrained(
            ctx.store.location(rm)).state_dict()
    assert len(keys["sft"]) == len(keys["reward_model"]) == 1
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    reference = "1 worker, accumulation 1"
    for task, runs in weights.items():
        moved = runs[reference]["model.layers.1.mlp.down_proj.weight"]
        assert not torch.allclose(moved, base["model.layers.1.mlp.down_proj.weight"]), "it trained"
        for name, state in runs.items():
            assert_same_weights(state, runs[reference], f"{task}, {name}")


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    """Every tensor within 1e-5 of the reference, relative to its norm, except the key
    projections' biases: adding a constant to every key leaves attention's softmax unchanged, so
    their gradient is zero in exact arithmetic and rounding noise in floating point, which AdamW
    (dividing each gradient by its own running magnitude) turns into updates of whatever sign the
    summation order gives. Nor element by element, for the same reason: an element whose gradient
    nearly cancels (a rare token's embedding) moves by a share of the learning rate that the
    summation order alone decides. A token mean per micro-batch differs by 3e-2 to 5e-1 here."""
    for param, value in got.items():
        if param.endswith("k_proj.bias"):
            continue
        gap = (value - want[param]).norm() / want[param].norm()
        assert gap <= 1e-5, f"{what}, {param}: relative difference {gap:.2e}"


def test_accumulation_does_not_change_the_objective(tiny_checkpoint):
    """The Ray-free loop alone: one batch of rows with answers of 1 to 4 words, whole or in four
    micro-batches of unequal token counts, gives the same weights; a token mean per micro-batch
    (weighted by rows) would not."""
    from transformers import AutoTokenizer

    from w2s_ray.runtime.encoding import encode_buckets
    from w2s_ray.runtime.trainer import optimize

    tok = AutoTokenizer.from_pretrained(f"{tiny_checkpoint}/tokenizer")
    buckets = encode_buckets(tok, varied_rows(16), max_length=64)
    states = {}
    for accum in (1, 4):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
        hp = TrainHParams(batch_size=8, grad_accum=accum, epochs=1, lr=1e-2)
        optimize(model, buckets, hp, seed=0, task=SFTTask())
        states[accum] = model.state_dict()
    assert_same_weights(states[4], states[1], "accumulation 4")


class OutOfMemoryOnce(SFTTask):
    """SFT whose first micro-batch runs out of memory; counts its model loads in `folder`."""

    def __init__(self, folder: str):
        self.folder = folder

    def load(self, path: str):
        loads = Path(self.folder) / "loads"
        loads.write_text(str(int(loads.read_text()) + 1 if loads.exists() else 1))
        return super().load(path)

    def loss(self, model, batch, total):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.slow
def test_an_out_of_memory_error_fails_the_stage_at_once_with_what_it_measured(ray_local, tmp_path,
                                                                                tiny_checkpoint):
    ctx = context(tmp_path)
    data = table(ctx, scan_rows(8), "scan")
    hp = TrainHParams(num_workers=1, cpus_per_worker=0.5, batch_size=8, epochs=1)
    with pytest.raises(StageOutOfMemory, match=r"oom: rank 0 ran out of memory \(CUDA out of memory\. Tried "
                                               r"to allocate 20\.00 GiB\); no CUDA figures; the layout's "
                                               r"estimate per GPU: 41\.0 GB\. Not retried"):
        run_training(OutOfMemoryOnce(str(tmp_path)), ModelLocation(ctx.store.root, tiny_checkpoint),
                     f"{ctx.store.location(data)}/{TABLE}", ctx.store.path("out"), hp, 0, "oom",
                     estimate_gb=41.0)
    assert (tmp_path / "loads").read_text() == "1", "Ray Train's retries end before loading the model"
