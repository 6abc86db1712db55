"""The paper's method pieces: partition, reward model, selection and the ablations' samplers."""

import pandas as pd
import pytest

from w2s_ray.stages.consistency import categories, partition_frame
from w2s_ray.stages.select import EmptySelection, clean_plus_noise, same_size_random, select
from w2s_ray.stages.tables import derive

from .test_stages import context


def labels(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    """(uid, capability, answer) rows as a generated label table."""
    return pd.DataFrame({"uid": [r[0] for r in rows], "capability": [r[1] for r in rows],
                         "prompt": [f"p {r[0]}" for r in rows],
                         "label_text": [f"answer {r[2]} ." for r in rows], "answer": [r[2] for r in rows]})


def test_partition_and_every_fig5_category():
    # (weak answer, strong answer, gold) -> category; None is an unparseable output.
    cases = {"a": ("4", "4", "4", "true_con"), "b": ("5", "5", "4", "false_con"),
             "c": ("5", "4", "4", "strong_true"), "d": ("4", "5", "4", "weak_true"),
             "e": ("5", "6", "4", "false_incon"), "f": (None, None, "4", "false_incon"),
             "g": (None, "4", "4", "strong_true"), "h": ("4", None, "4", "weak_true")}
    weak = labels([(u, "arithmetic", w) for u, (w, _, _, _) in cases.items()])
    strong = labels([(u, "arithmetic", s) for u, (_, s, _, _) in reversed(cases.items())])
    gold = pd.DataFrame({"uid": list(cases), "gold": [g for _, _, g, _ in cases.values()]})
    pair = partition_frame(weak, strong)
    assert dict(zip(pair["uid"], pair["consistent"])) == {u: u in "ab" for u in cases}
    assert pair.set_index("uid").loc["c", "label_text_strong"] == "answer 4 ."
    assert dict(zip(pair["uid"], categories(pair, gold))) == {u: c[3] for u, c in cases.items()}
    with pytest.raises(ValueError, match="different prompts"):
        partition_frame(weak, strong.iloc[1:])


def scored(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    """(uid, capability, score, consistent) weak rows as the reward stage writes them."""
    df = labels([(u, c, "1") for u, c, _, _ in rows])
    return df.assign(score=[r[2] for r in rows], target=[r[3] for r in rows], role="weak")


def test_selection_keeps_high_scores_and_guards_an_empty_capability():
    df = scored([("a1", "arithmetic", 0.9, 1), ("a2", "arithmetic", 0.2, 0), ("a3", "arithmetic", 0.6, 0),
                 ("s1", "scan", 0.1, 1), ("s2", "scan", 0.3, 0), ("s3", "scan", 0.4, 1)])
    negatives = scored([("a2", "arithmetic", 0.99, 0)]).assign(role="negative")
    out = select(pd.concat([df, negatives]), threshold=0.5, fallback="consistent")
    kept = dict(zip(out["uid"], out["fallback"]))
    assert kept == {"a1": False, "a3": False, "s1": True, "s3": True}
    assert set(select(df, 0.5, "all")["uid"]) == {"a1", "a3", "s1", "s2", "s3"}
    with pytest.raises(EmptySelection, match="no scan sample at threshold 0.5"):
        select(df, 0.5, "fail")
    # scan: nothing kept, nothing consistent -> left out (the selection methods do not apply
    # to it), never an error that stops the sweep
    no_consistent = df.assign(target=[1, 0, 0, 0, 0, 0])
    out = select(no_consistent, 0.5, "consistent")
    assert set(out["capability"]) == {"arithmetic"} and set(out["uid"]) == {"a1", "a3"}
    assert select(df.assign(score=0.0, target=0), 0.5, "consistent").empty
    assert set(select(no_consistent, 0.5, "all")["capability"]) == {"arithmetic", "scan"}


def test_selection_methods_skip_a_capability_with_nothing_selected(ray_local, tmp_path):
    from w2s_ray.methods import NotApplicable, Target
    from w2s_ray.methods.pipeline import evaluated_on, selected_capabilities
    from w2s_ray.models.location import ModelRef
    from w2s_ray.stages import data

    ctx = context(tmp_path)
    caps = list(ctx.config.capabilities)
    rows = [(f"{c}{i}", c, 0.9 if c != caps[0] else 0.1, int(c != caps[0])) for c in caps for i in range(3)]
    chosen = derive(ctx, "toy_selected", 1, [], {}, lambda: select(scored(rows), 0.5, "consistent"))
    assert selected_capabilities(ctx, chosen) == caps[1:]
    model = ModelRef("base:toy", "nowhere")
    [target] = evaluated_on(ctx, model, caps[1:])
    assert isinstance(target, Target) and target.model == model
    assert set(data.read(ctx, target.test)["capability"]) == set(caps[1:])
    assert evaluated_on(ctx, model, caps) == model, "nothing left out: the same target as before"
    nothing = derive(ctx, "toy_selected", 1, [], {"empty": True},
                     lambda: select(scored([(u, c, 0.1, 0) for u, c, _, _ in rows]), 0.5, "consistent"))
    with pytest.raises(NotApplicable, match="no capability has a consistent one"):
        selected_capabilities(ctx, nothing)


def test_random_control_has_the_selected_size_per_capability():
    weak = labels([(f"{c}{i}", c, "1") for c in ("arithmetic", "scan") for i in range(30)])
    chosen = weak[weak["uid"].isin(["arithmetic1", "arithmetic7", "scan3"] + [f"scan{i}" for i in range(10, 20)])]
    sub = same_size_random(weak, chosen, seed=0)
    assert sub.groupby("capability").size().to_dict() == {"arithmetic": 2, "scan": 11}
    assert set(sub["uid"]) <= set(weak["uid"]) and sub["uid"].is_unique
    assert same_size_random(weak, chosen, seed=0).equals(sub)
    assert set(same_size_random(weak, chosen, seed=1)["uid"]) != set(sub["uid"])


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_noise_sampler_adds_the_proportion_of_wrong_samples(p):
    # arithmetic: 12 right, 8 wrong; scan: 3 right, 17 wrong
    rows = [(f"a{i}", "arithmetic", "4" if i < 12 else "5") for i in range(20)]
    rows += [(f"s{i}", "scan", "JUMP" if i < 3 else "WALK") for i in range(20)]
    weak = labels(rows)
    gold = pd.DataFrame({"uid": weak["uid"], "gold": ["4"] * 20 + ["JUMP"] * 20})
    out = clean_plus_noise(weak, gold, p, seed=0)
    right = out["answer"].isin(["4", "JUMP"])
    assert out[right].groupby("capability").size().to_dict() == {"arithmetic": 12, "scan": 3}
    wrong = out[~right].groupby("capability").size().reindex(["arithmetic", "scan"], fill_value=0)
    assert wrong.to_dict() == {"arithmetic": round(p * 8), "scan": round(p * 17)}
    assert out["uid"].is_unique


def toy_partition(n: int = 24) -> pd.DataFrame:
    """Separable by the label: consistent rows say JUMP, the strong side of the rest says WALK."""
    rows = []
    for i in range(n):
        prompt = f"to dazal {'twice ' if i % 2 else ''}, do"
        rows.append({"uid": f"t{i}", "capability": "scan", "prompt": prompt, "consistent": i < n // 2,
                     "label_text_weak": "JUMP JUMP .", "answer_weak": "JUMP JUMP",
                     "label_text_strong": "WALK WALK .", "answer_strong": "WALK WALK"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("cross_fit", [0, 2])
def test_reward_model_learns_to_separate_positives_from_negatives(ray_local, tmp_path, tiny_checkpoint,
                                                                  cross_fit):
    from w2s_ray.models.location import ModelRef
    from w2s_ray.stages.data import read
    from w2s_ray.stages.reward import fold_of, reward_scores

    ctx = context(tmp_path, **{"reward.epochs": 8, "reward.lr": 3e-3, "reward.cross_fit": cross_fit})
    pair = derive(ctx, "toy_partition", 1, [], {}, toy_partition)
    out = read(ctx, reward_scores(ctx, ModelRef("base:toy", tiny_checkpoint), pair))
    weak, neg = out[out["role"] == "weak"], out[out["role"] == "negative"]
    assert len(weak) == 24 and len(neg) == 12, "every weak sample and every negative scored once"
    positives = weak[weak["target"] == 1]["score"]
    assert positives.min() > 0.5 > neg["score"].max()
    if cross_fit:
        log = ctx.builder.stage_log.frame()
        assert (log["stage"] == "reward_model").sum() == 2
        assert {fold_of(u, 2) for u in out["uid"]} == {0, 1}


@pytest.mark.parametrize(("cross_fit", "metric"), [(0, "train_accuracy"), (2, "out_of_fold_accuracy")])
def test_reward_accuracy_is_named_out_of_fold_under_cross_fitting(ray_local, tmp_path, cross_fit, metric):
    from w2s_ray.analysis import selection_frames
    from w2s_ray.report import selection_table

    ctx = context(tmp_path, **{"reward.cross_fit": cross_fit})
    weak = scored([("a1", "scan", 0.9, 1), ("a2", "scan", 0.2, 0), ("a3", "scan", 0.7, 1)])
    negatives = scored([("a2", "scan", 0.3, 0)]).assign(role="negative")
    arts = {"scores": derive(ctx, "toy_scores", 1, [], {}, lambda: pd.concat([weak, negatives])),
            "selected": derive(ctx, "toy_chosen", 1, [], {}, lambda: select(weak, 0.5, "consistent"))}
    strong = weak.assign(answer=["1", "2", "1"])
    pair = partition_frame(weak, strong)
    gold = pd.DataFrame({"uid": ["a1", "a2", "a3"], "gold": ["1", "1", "1"]})
    frames = pd.concat(selection_frames(ctx, arts, pair, weak, strong, gold))
    reward = frames[frames["analysis"] == "reward"].set_index(["capability", "metric"])["value"]
    assert reward[("scan", metric)] == 1.0
    partition = pd.DataFrame({"analysis": "partition", "capability": "average",
                              "metric": ["n_consistent", "n_unlabeled"], "value": [2.0, 3.0]})
    notes = pd.concat([frames, partition]).assign(weak="t1", strong="t2", seed=0)
    table = selection_table(notes)
    column, other = ("reward_oof_acc", "reward_train_acc") if cross_fit else ("reward_train_acc", "reward_oof_acc")
    assert table.iloc[0][column] == "1.000" and other not in table.columns


def test_unparseable_answers_stay_none_through_scoring_and_parquet(ray_local, tmp_path, tiny_checkpoint):
    """The reward scoring stage on rows whose answers are partly None (unparseable): every column
    a backend receives converts to Arrow as it is (no pickled fallback, no ArrowConversionError),
    the answers come back from Parquet as None, not float NaN, and each row keeps its own score."""
    import numpy as np
    import pyarrow as pa
    import torch
    from transformers import AutoModelForSequenceClassification

    from w2s_ray.models.location import ModelRef
    from w2s_ray.models.tokenizer import load_tokenizer, save_checkpoint
    from w2s_ray.runtime.backends import TransformersScorer
    from w2s_ray.runtime.encoding import encode_pairs
    from w2s_ray.runtime.inference import map_with_model
    from w2s_ray.runtime.tasks import RewardTask

    class ArrowCheckedScorer(TransformersScorer):
        def __call__(self, batch):
            for values in batch.values():
                pa.array(list(values))  # what Ray does with the batch it gets back; raises on NaN + str
            return super().__call__(batch)

    # A classifier with its head saved, so the Ray workers score with the weights read here.
    reward_model = str(tmp_path / "reward")
    torch.manual_seed(0)
    save_checkpoint(RewardTask().load(tiny_checkpoint), load_tokenizer(tiny_checkpoint), reward_model,
                    own_subfolder=True)
    ctx = context(tmp_path)
    rows = scored([("a1", "scan", 0.0, 1), ("a2", "scan", 0.0, 0), ("a3", "scan", 0.0, 0)]).assign(
        prompt=["to dazal , do", "to dazal twice , do", "to dazal left , do"],
        label_text=["JUMP .", "JUMP JUMP .", "LTURN JUMP ."])
    with torch.inference_mode():
        enc = encode_pairs(load_tokenizer(reward_model), list(rows["prompt"]), list(rows["label_text"]), 64)
        logits = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()(**enc).logits
    expected = torch.softmax(logits, -1)[:, 1].numpy()
    assert len(set(np.round(expected, 6))) == 3, "each row scores differently, so a row given another's score shows"
    # written and read back as a stage table: pandas' string dtype would make the None a NaN
    ctx.store.write_table(f"{tmp_path}/rows.parquet", rows.assign(answer=["JUMP", None, None]).drop(columns="score"))
    rows = ctx.store.read_table(f"{tmp_path}/rows.parquet")
    assert rows["answer"].tolist() == ["JUMP", None, None]
    model = ModelRef("reward:toy", reward_model)
    backends = {"transformers": ArrowCheckedScorer, "vllm": ArrowCheckedScorer}
    out, _ = map_with_model(ctx.config.inference, ctx.store, model, rows, backends, ["score"], 64, {"max_length": 64})
    assert out["answer"].tolist() == ["JUMP", None, None]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, atol=1e-6)
    ctx.store.write_table(f"{tmp_path}/scored.parquet", out)
    back = ctx.store.read_table(f"{tmp_path}/scored.parquet")
    assert back["answer"].tolist() == ["JUMP", None, None]
    assert back["answer"].map(type).tolist() == [str, type(None), type(None)]
    # a frame built in memory holds pandas' string dtype, NaN for None: only the backend's input
    # columns enter Ray Data, so that column is never converted there
    in_memory = rows.assign(answer=pd.Series(["JUMP", None, None], dtype="str"))
    out, _ = map_with_model(ctx.config.inference, ctx.store, model, in_memory, backends, ["score"], 64,
                            {"max_length": 64})
    np.testing.assert_allclose(out["score"].to_numpy(), expected, atol=1e-6)
