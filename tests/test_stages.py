"""The Train, Data and dataset stages on a real tiny checkpoint through real Ray."""

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from w2s_ray.artifacts import Artifact, Builder, StageLog, Store, lease_book
from w2s_ray.config import load_config
from w2s_ray.ladder.publish import publish_tiny_ladder, tiny_rungs
from w2s_ray.models.location import ModelRef
from w2s_ray.models.tokenizer import load_tokenizer, prompt_ids
from w2s_ray.runtime.encoding import encode
from w2s_ray.stages import data
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.evaluate import score_frame
from w2s_ray.stages.generate import generate
from w2s_ray.stages.train import identity, sft


def context(tmp_path, **overrides) -> StageContext:
    config = load_config("smoke", {"storage": str(tmp_path), **overrides})
    store = Store(config.storage)
    builder = Builder(store, StageLog(store, config.name, "test"), lease_book("stages"), "holder")
    publish_tiny_ladder(builder, tiny_rungs(config.ladder.rungs))
    return StageContext(config, store, builder, seed=0)


def table(ctx: StageContext, df: pd.DataFrame, name: str) -> Artifact:
    art = Artifact.make("table", 1, [], {"name": name})
    return ctx.builder.ensure(art, lambda folder: ctx.store.write_table(f"{folder}/{data.TABLE}", df) or {})


def test_splits_are_disjoint_and_deterministic_by_seed(ray_local, tmp_path):
    ctx = context(tmp_path / "a")
    frames = {s: data.split_frame(ctx, s) for s in data.SPLITS}
    sizes = ctx.config.splits
    for split, n in zip(data.SPLITS, (sizes.labeled, sizes.unlabeled, sizes.test)):
        assert frames[split].groupby("capability").size().tolist() == [n] * 4
    prompts = [set(frames[s]["prompt"]) for s in data.SPLITS]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    again = data.split_frame(context(tmp_path / "b"), "test")
    pd.testing.assert_frame_equal(frames["test"], again)
    other_seed = context(tmp_path / "c")
    other_seed.seed = 1
    assert other_seed.config.data_seed == 0
    pd.testing.assert_frame_equal(data.split_frame(other_seed, "test"), frames["test"])
    redrawn = context(tmp_path / "d", data_seed="same")
    redrawn.seed = 1
    assert set(data.split_frame(redrawn, "test")["prompt"]) != prompts[2]
    other_data = context(tmp_path / "e", data_seed=1)
    assert set(data.split_frame(other_data, "test")["prompt"]) != prompts[2]


def test_unlabeled_table_hides_gold(ray_local, tmp_path):
    ctx = context(tmp_path)
    hidden = data.read(ctx, data.split_table(ctx, "unlabeled", with_gold_labels=False))
    assert "gold" not in hidden and hidden["label_text"].isna().all() and hidden["answer"].isna().all()


def test_loss_covers_answer_tokens_only(tiny_checkpoint):
    tok = load_tokenizer(tiny_checkpoint)
    batch = encode(tok, ["to dazal , do", "to dazal twice , do"], ["JUMP .", "JUMP JUMP ."], 64)
    assert batch["input_ids"].shape == (2, 10)
    assert tok.convert_ids_to_tokens(batch["input_ids"][0, :2].tolist()) == ["<eos>", "to"]
    trained = [tok.convert_ids_to_tokens(ids[lab != -100].tolist())
               for ids, lab in zip(batch["input_ids"], batch["labels"])]
    assert trained == [["JUMP", ".", "<eos>"], ["JUMP", "JUMP", ".", "<eos>"]]
    assert batch["attention_mask"].sum(1).tolist() == [8, 10]


def scan_rows(n: int) -> pd.DataFrame:
    prompts = ["to dazal , do", "to dazal left , do", "to dazal twice , do", "to dazal right , do"]
    labels = ["JUMP", "LTURN JUMP", "JUMP JUMP", "RTURN JUMP"]
    reps = n // len(prompts)
    return pd.DataFrame({"uid": [f"u{i}" for i in range(reps * 4)], "capability": "scan",
                         "prompt": prompts * reps, "label_text": labels * reps,
                         "answer": labels * reps, "gold": labels * reps})


def test_sft_through_ray_train_learns_and_saves_a_loadable_model(ray_local, tmp_path, tiny_checkpoint):
    # Ray Train's local mode, as the tiny presets run it; the worker group (DDP and FSDP on 2 gloo
    # workers) is trained and checked in test_parallel.py.
    ctx = context(tmp_path, **{"train.num_workers": 0, "train.epochs": 30, "train.lr": 5e-3,
                               "train.batch_size": 16})
    rows = table(ctx, scan_rows(32), "scan")
    art = sft(ctx, ModelRef(id="base:test", source=tiny_checkpoint), rows)
    meta = ctx.store.read_json(ctx.store.marker(art))
    assert meta["final_loss"] < 0.5 * meta["first_loss"]
    assert meta["lengths"] == {"scan": {"rows": 32, "truncated": 0, "over_budget": 0, "longest_label": 2}}
    trained = AutoModelForCausalLM.from_pretrained(ctx.store.location(art))
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    assert not torch.equal(trained.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
    assert load_tokenizer(ctx.store.location(art)).get_vocab() == load_tokenizer(tiny_checkpoint).get_vocab()
    assert sft(ctx, ModelRef(id="base:test", source=tiny_checkpoint), rows) == art
    statuses = StageLog(ctx.store, ctx.config.name, "").frame().query("stage == 'sft'")["status"]
    assert sorted(statuses) == ["built"]


def test_weight_averaging_lands_half_way_between_the_trained_and_the_base_weights(ray_local, tmp_path,
                                                                                   tiny_checkpoint):
    """toward_base 0.5 is the model trained with the same seed, moved half way back to its base;
    the tied embedding (one parameter, two state-dict names) moves once, not twice."""
    rows_df, base = scan_rows(32), AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    trained = {}
    for share in (0.0, 0.5):
        ctx = context(tmp_path / str(share), **{"train.num_workers": 0, "train.epochs": 3, "train.lr": 5e-3,
                                                "train.batch_size": 16, "train.toward_base": share})
        art = sft(ctx, ModelRef(id="base:test", source=tiny_checkpoint), table(ctx, rows_df, "scan"))
        trained[share] = AutoModelForCausalLM.from_pretrained(ctx.store.location(art))
        assert ("toward_base" in identity(ctx.config.train)) == bool(share), "keys name averaging only when on"
    assert base.config.tie_word_embeddings
    for name, b in base.named_parameters():
        full, half = trained[0.0].get_parameter(name), trained[0.5].get_parameter(name)
        assert not torch.equal(full, b) or "norm" in name
        torch.testing.assert_close(half, (full + b) / 2, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(trained[0.5].lm_head.weight, (trained[0.0].lm_head.weight + base.lm_head.weight) / 2)

    # With an anchor (stage 2's `stage2.anchor: pretrained`), half way back toward the anchor instead.
    art = sft(ctx, ModelRef(id="base:test", source=tiny_checkpoint), table(ctx, rows_df, "scan"),
              anchor=ctx.model(art))
    anchored = AutoModelForCausalLM.from_pretrained(ctx.store.location(art))
    for name, b in base.named_parameters():
        full = trained[0.0].get_parameter(name)
        torch.testing.assert_close(anchored.get_parameter(name), 0.75 * full + 0.25 * b, rtol=1e-5, atol=1e-6,
                                   msg=name)


def test_ray_data_generation_equals_direct_greedy_decoding(ray_local, tmp_path, tiny_checkpoint):
    ctx = context(tmp_path, **{"inference.batch_size": 3})
    rows = scan_rows(8).assign(capability=["scan", "facts"] * 4)
    preds = data.read(ctx, generate(ctx, ModelRef(id="base:test", source=tiny_checkpoint), table(ctx, rows, "p")))
    assert set(preds.columns) >= {"uid", "capability", "prompt", "label_text", "answer", "gold"}
    assert sorted(preds["uid"]) == sorted(rows["uid"])
    tok = load_tokenizer(tiny_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    from w2s_ray.capabilities import registry
    from w2s_ray.runtime.backends import cut_at_stop
    for _, row in preds.iterrows():
        cap = registry.get(row["capability"])
        ids = torch.tensor([prompt_ids(tok, row["prompt"])])
        out = model.generate(ids, max_new_tokens=cap.max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        # Rows of both capabilities share batches; each still ends at its own budget and stop.
        assert row["label_text"] == cut_at_stop(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True),
                                                cap.stop)


def test_scoring_counts_unparseable_outputs_as_wrong():
    preds = pd.DataFrame({"uid": ["f0", "f1", "f2", "t0"],
                          "capability": ["facts", "facts", "facts", "temporal"],
                          "answer": ["true", None, "false", "monday"],
                          "gold": ["true", "true", "true", "monday"]})
    scores = score_frame(preds).set_index(["capability", "metric"])["value"]
    assert scores[("facts", "accuracy")] == pytest.approx(1 / 3)
    assert scores[("facts", "parsed")] == pytest.approx(2 / 3)
    assert scores[("temporal", "accuracy")] == 1.0


def test_batches_never_mix_capabilities_and_cover_every_row_each_epoch():
    import torch

    from w2s_ray.runtime.trainer import batch_plan

    plan = batch_plan([10, 3, 7], batch_size=4, epochs=2, gen=torch.Generator().manual_seed(0))
    assert len(plan) == 2 * (3 + 1 + 2)
    first_epoch = plan[:6]
    for bucket, size in enumerate([10, 3, 7]):
        rows = torch.cat([idx for b, idx in first_epoch if b == bucket])
        assert sorted(rows.tolist()) == list(range(size))
    assert all(len(idx) <= 4 for _, idx in plan)
