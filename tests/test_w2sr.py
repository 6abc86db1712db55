"""Weak-to-strong reasoning's pieces: the DPO objective against TRL's, the contrastive pair rules,
seeded sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from w2s_ray.artifacts import Artifact, StageLog, Store
from w2s_ray.config import TrainHParams
from w2s_ray.runtime.backends import answer_logps
from w2s_ray.runtime.tasks import DPOTask

PROMPTS = ["jump twice =", "walk and look =", "turn left ="]
CHOSEN = ["JUMP JUMP", "WALK LOOK", "LTURN"]
REJECTED = ["JUMP", "LOOK WALK WALK", "RTURN RTURN"]


def perturbed(model, seed: int):
    """A second model: the reference of the comparisons, a little away from the policy."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def test_dpo_loss_equals_trls_on_the_same_batch(tiny_checkpoint, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from w2s_ray.models.tokenizer import prompt_ids

    tok = AutoTokenizer.from_pretrained(f"{tiny_checkpoint}/tokenizer")
    policy = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    reference = perturbed(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), 1)
    beta = 0.1
    with torch.no_grad():
        ref = {name: answer_logps(reference, tok, PROMPTS, answers, 64)[0]
               for name, answers in (("chosen", CHOSEN), ("rejected", REJECTED))}
    rows = pd.DataFrame({"capability": "scan", "prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED,
                         "logp_chosen": ref["chosen"].numpy(), "logp_rejected": ref["rejected"].numpy()})
    task = DPOTask(beta)
    [bucket] = task.buckets(tok, rows, TrainHParams(max_length=64))
    ours = task.loss(policy, bucket, task.total(bucket))

    # TRL's own trainer and collator, its reference model computing the reference terms itself.
    answer = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    examples = [{"prompt_ids": prompt_ids(tok, p), "chosen_ids": answer(c), "rejected_ids": answer(r)}
                for p, c, r in zip(PROMPTS, CHOSEN, REJECTED)]
    # bf16=False: DPOConfig defaults to bf16, and our batch is float32.
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=["sigmoid"], report_to=[],
                     use_cpu=True, bf16=False, per_device_train_batch_size=len(PROMPTS))
    data = Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data, processing_class=tok)
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(examples)
    theirs = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    assert abs(ours.item() - theirs.item()) <= 1e-5, (ours.item(), theirs.item())
    assert ours.item() != pytest.approx(torch.nn.functional.softplus(torch.tensor(0.0)).item(), abs=1e-4), \
        "the reference differs from the policy: the loss is not log 2"


def samples_of(answers: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"uid": "u", "sample": range(len(answers)), "label_text": [f"says {a}" for a in answers],
                         "answer": answers})


def weak_row(answer: str | None) -> pd.DataFrame:
    return pd.DataFrame({"uid": ["u"], "capability": ["arithmetic"], "prompt": ["1+1 ="],
                         "label_text": [f"weak says {answer}"], "answer": [answer]})


PAIR_CASES = [  # (sampled answers (k = 10), weak answer) -> (rule, chosen's answer, rejected's answer) or None
    ("majority 5/10 < 0.6: skipped", ["1"] * 5 + ["2"] * 5, "1", None),
    ("majority 6/10 is weak's: weak over a minority", ["1"] * 6 + ["2"] * 4, "1", ("weak_is_majority", "weak", "2")),
    ("weak is the majority, no minority: skipped", ["1"] * 10, "1", None),
    ("minority includes unparseable samples", ["1"] * 9 + [None], "1", ("weak_is_majority", "weak", None)),
    ("majority 8/10 not weak's: majority over weak", ["3"] * 8 + ["1"] * 2, "1", ("confident_majority", "3", "weak")),
    ("majority 7/10 not weak's, < 0.8: skipped", ["3"] * 7 + ["1"] * 3, "1", None),
    ("weak answer among none of the samples, majority 10/10", ["3"] * 10, "9", ("confident_majority", "3", "weak")),
    ("unparseable weak answer: skipped", ["3"] * 10, None, None),
    ("unparseable samples are never the majority", [None] * 7 + ["3"] * 3, "3", None),
]


@pytest.mark.parametrize(("case", "answers", "weak", "expected"), PAIR_CASES, ids=[c[0] for c in PAIR_CASES])
def test_contrastive_pairs_follow_the_rules(case, answers, weak, expected):
    from w2s_ray.stages.pairs import contrastive_pairs

    pairs = contrastive_pairs(samples_of(answers), weak_row(weak), 0.6, 0.8, seed=0)
    if expected is None:
        assert pairs.empty, case
        return
    rule, chosen, rejected = expected
    [row] = pairs.to_dict("records")
    text = {"weak": f"weak says {weak}"}
    assert (row["rule"], row["chosen"], row["rejected"]) == (rule, text.get(chosen, f"says {chosen}"),
                                                             text.get(rejected, f"says {rejected}")), case
    assert row["majority_share"] == max(answers.count(a) for a in set(answers) if a is not None) / len(answers)


def test_the_random_minority_is_drawn_per_item_and_seed():
    from w2s_ray.stages.pairs import contrastive_pairs

    answers = ["1"] * 6 + ["2", "3", "4", "5"]
    draws = {s: contrastive_pairs(samples_of(answers), weak_row("1"), 0.6, 0.8, seed=s)["rejected"].item()
             for s in range(12)}
    assert set(draws.values()) <= {"says 2", "says 3", "says 4", "says 5"}
    assert len(set(draws.values())) > 1, "the rejected sample is drawn, not always the first minority"
    assert contrastive_pairs(samples_of(answers), weak_row("1"), 0.6, 0.8, seed=3)["rejected"].item() == draws[3]


def test_sampling_is_reproducible_for_a_seed_and_independent_of_the_batch(tiny_checkpoint):
    import numpy as np

    from w2s_ray.runtime.backends import TransformersBackend
    from w2s_ray.stages.sample import sampled_rows

    prompts = pd.DataFrame({"uid": ["a", "b", "c"], "capability": "scan", "prompt": PROMPTS})
    rows = sampled_rows(prompts, k=4, temperature=1.0, seed=7)
    backend = TransformersBackend(tiny_checkpoint, 1, "float32")

    def run(df: pd.DataFrame) -> list[str]:
        batch = {c: df[c].to_numpy() for c in ("prompt", "max_new_tokens", "stop", "temperature", "sample_seed")}
        return list(backend(batch)["completion"])

    whole = run(rows)
    assert run(rows) == whole, "the same seeds give the same samples"
    assert run(rows.iloc[::-1])[::-1] == whole, "a row's sample does not depend on its batch"
    assert len(set(whole[:4])) > 1, "an untrained model at temperature 1 samples different answers"
    other = run(sampled_rows(prompts, k=4, temperature=1.0, seed=8))
    assert other != whole, "another seed, other samples"
    greedy = {c: rows[c].to_numpy() for c in ("prompt", "max_new_tokens", "stop")}
    assert len(set(np.asarray(backend(greedy)["completion"])[:4])) == 1, "without seeds: greedy, one answer"


@pytest.mark.slow
def test_a_smoke_sweep_runs_w2sr_dpo_and_prints_its_row(tmp_path):
    """Stage I (one round, to stay small), the samples, pairs, reference log-probs and DPO of a
    real sweep: w2sr-dpo gets a row, and DPO's first loss is log 2, so the stored reference
    log-probabilities are the policy's own at its first step."""
    from tests.test_sweep import run_cli

    storage = str(tmp_path / "store")
    out = run_cli("--preset", "smoke", "--storage", storage, "--methods", "weak", "wts", "ceiling", "w2sr-dpo",
                  "--set", "w2sr.rounds=1")
    header = next(line for line in out.splitlines() if "pgr_w2sr-dpo" in line)
    row = next(line for line in out.splitlines() if line.startswith("| t1 -> t2 | average"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert 0.0 <= float(cells["w2sr-dpo"]) <= 1.0
    store = Store(storage)
    log = StageLog(store, "smoke", "").frame()
    built = log[log["status"] == "built"]
    assert {"sample", "contrastive_pairs", "logprobs", "dpo"} <= set(built["stage"])
    [key] = built[built["stage"] == "dpo"]["key"]
    folder = store.location(Artifact("dpo", key))
    metrics = json.loads((Path(folder) / "train_metrics.json").read_text())
    assert metrics["first_loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_the_dry_run_costs_w2srs_stages_at_the_papers_sizes(tmp_path):
    """qwen15-scale: k samples cost k greedy passes, the reference scores two answers per pair,
    and DPO at 72B lays out on FSDP with its memory that of SFT with two sequences per row."""
    from w2s_ray import plan
    from w2s_ray.config import load_config
    from w2s_ray.models import layout, resources
    from w2s_ray.stages import fetch

    config = fetch.pin_revisions(load_config("qwen15-scale", {
        "storage": str(tmp_path), "pairs": [["32b", "72b"]],
        "methods": ["weak", "wts", "ceiling", "w2sr-dpo", "ours-dpo-reward"]}), lambda rung: "planned")
    stages = [s for s in plan.plan_stages(config) if s.get("rung") == "72b"]
    by = {(s["stage"], s["tag"]): s for s in stages}
    assert {("sample", "w2sr_samples"), ("logprobs", "reference_logprobs"), ("dpo", "w2sr-dpo"),
            ("dpo", "dpo-reward"), ("logprobs", "dpo_reward_policy")} <= set(by)
    greedy = plan.cost(config, by[("generate", "relabel")])[1]
    assert plan.cost(config, by[("sample", "w2sr_samples")])[1] == pytest.approx(config.w2sr.samples * greedy)
    request, dpo_hours = plan.cost(config, by[("dpo", "w2sr-dpo")])
    _, sft_hours = plan.cost(config, by[("sft", "wts")])
    assert "fsdp" in request and dpo_hours == pytest.approx(2 * sft_hours)
    dpo_hp = layout.resolve(config, "72b").dpo
    memory = plan.stage_memory_gb(config, by[("dpo", "w2sr-dpo")])
    assert memory == resources.training_estimate_gb(layout.resolve(config, "72b").arch, dpo_hp, sequences=2)
    assert memory <= resources.FIT_GB
    assert memory > resources.training_estimate_gb(layout.resolve(config, "72b").arch, dpo_hp), \
        "two sequences per row hold more than one"
    assert plan.cost(config, by[("logprobs", "reference_logprobs")])[1] == pytest.approx(
        2 * plan.cost(config, by[("logprobs", "dpo_reward_policy")])[1])


def test_the_implicit_reward_keeps_what_the_dpo_model_made_more_likely():
    from w2s_ray.methods.w2sr import implicit_scores
    from w2s_ray.stages.select import select

    rows = pd.DataFrame({"uid": ["a", "b", "c"], "capability": "arithmetic", "prompt": "p", "label_text": "t",
                         "answer": "1", "role": "weak", "target": [1, 0, 1]})
    policy = rows.assign(logp_label_text=[-1.0, -5.0, -2.0])
    reference = rows.assign(logp_label_text=[-2.0, -4.0, -2.0])
    scored = implicit_scores(policy, reference, beta=0.1)
    assert scored["reward"].tolist() == pytest.approx([0.1, -0.1, 0.0])
    assert scored["score"].tolist() == pytest.approx([1 / (1 + math.exp(-0.1)), 1 / (1 + math.exp(0.1)), 0.5])
    assert select(scored, 0.5, "consistent")["uid"].tolist() == ["a"]


def test_accumulation_does_not_change_the_dpo_objective(tiny_checkpoint):
    """The Ray-free loop: one batch of 7 pairs whole or in 3 micro-batches (3, 2, 2 pairs) gives
    the same weights; a mean per micro-batch, averaged, would not."""
    from tests.test_objective import assert_same_weights
    from w2s_ray.runtime.trainer import optimize

    tok = AutoTokenizer.from_pretrained(f"{tiny_checkpoint}/tokenizer")
    reference = perturbed(AutoModelForCausalLM.from_pretrained(tiny_checkpoint), 2)
    prompts, chosen, rejected = (PROMPTS * 3)[:7], (CHOSEN * 3)[:7], (REJECTED[::-1] * 3)[:7]
    with torch.no_grad():
        ref = {name: answer_logps(reference, tok, prompts, answers, 64)[0].numpy()
               for name, answers in (("chosen", chosen), ("rejected", rejected))}
    rows = pd.DataFrame({"capability": "scan", "prompt": prompts, "chosen": chosen, "rejected": rejected,
                         "logp_chosen": ref["chosen"], "logp_rejected": ref["rejected"]})

    class MicroMean(DPOTask):
        def loss(self, model, batch, total):
            return super().loss(model, batch, self.total(batch)) / 3

    def trained(task: DPOTask, accum: int) -> dict[str, torch.Tensor]:
        model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
        hp = TrainHParams(batch_size=7, grad_accum=accum, epochs=2, lr=1e-2, max_length=64)
        optimize(model, task.buckets(tok, rows, hp), hp, seed=0, task=task)
        return model.state_dict()

    whole = trained(DPOTask(0.1), 1)
    assert_same_weights(trained(DPOTask(0.1), 3), whole, "DPO, accumulation 3")
    with pytest.raises(AssertionError):
        assert_same_weights(trained(MicroMean(0.1), 3), whole, "a mean per micro-batch")
