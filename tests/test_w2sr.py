"""Weak-to-strong reasoning's pieces: the DPO objective against TRL's, the contrastive pair rules,
seeded sampling."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

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
        ref = {name: answer_logps(reference, tok, PROMPTS, answers, 64)
               for name, answers in (("chosen", CHOSEN), ("rejected", REJECTED))}
    rows = pd.DataFrame({"capability": "scan", "prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED,
                         "logp_chosen": ref["chosen"].numpy(), "logp_rejected": ref["rejected"].numpy()})
    task = DPOTask(beta)
    [bucket] = task.buckets(tok, rows, TrainHParams(max_length=64))
    ours = task.loss(policy, bucket, task.total(bucket))

    # TRL's own trainer and collator, its reference model computing the reference terms itself.
    answer = lambda text: tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # noqa: E731
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
