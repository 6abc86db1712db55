"""Rows into token tensors: the supervised rows (loss on the answer and its EOS), the reward
model's (prompt, label) pairs, and what a training stage reports about its rows' lengths."""

from __future__ import annotations

import torch

from w2s_ray.capabilities import registry
from w2s_ray.models.tokenizer import prompt_ids

#: a stage warns when more than this share of a capability's rows is cut at train.max_length
TRUNCATED_WARN = 0.01

Buckets = list[dict[str, torch.Tensor]]


def encode(tok, prompts: list[str], labels: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded fixed-shape rows; the loss is masked to the answer tokens and the final EOS."""
    rows, targets = [], []
    for prompt, label in zip(prompts, labels):
        p = prompt_ids(tok, prompt)
        a = tok(label, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = (p + a)[:max_length]
        rows.append(ids)
        targets.append(([-100] * len(p) + a)[:max_length])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    target = torch.full((len(rows), width), -100)
    for i, (r, t) in enumerate(zip(rows, targets)):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        target[i, : len(t)] = torch.tensor(t)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": target}


def encode_buckets(tok, df, max_length: int) -> Buckets:
    """One fixed-shape block per capability: a batch never mixes capabilities, so short answers
    do not pay for the longest capability's width, and the few distinct shapes keep CPU kernels
    warm (a new shape per batch was measured ~4x slower)."""
    return [encode(tok, g["prompt"].tolist(), g["label_text"].tolist(), max_length)
            for _, g in df.groupby("capability", sort=True)]


def encode_preferences(tok, prompts: list[str], chosen: list[str], rejected: list[str],
                       max_length: int) -> dict[str, torch.Tensor]:
    """Each row's chosen and rejected answers, encoded as `encode` encodes a supervised row (the
    reference log-probabilities are summed over the same tokens), stacked on a second axis of
    size 2 so a batch's row indices select whole pairs."""
    both = encode(tok, prompts + prompts, chosen + rejected, max_length)
    n = len(prompts)
    return {k: torch.stack([v[:n], v[n:]], dim=1) for k, v in both.items()}


def encode_pairs(tok, prompts: list[str], labels: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """BOS + prompt + label, right-padded; too long rows lose their *start*, since the classifier
    reads the last token and the label is what is judged. The one encoding of the reward model:
    training and every scorer call it with the training run's `max_length`."""
    rows = [(prompt_ids(tok, p) + tok(lab, add_special_tokens=False)["input_ids"])[-max_length:]
            for p, lab in zip(prompts, labels)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def length_report(tok, df, max_length: int) -> dict[str, dict[str, int]]:
    """Per capability: rows; rows longer than `max_length` with their EOS, which `encode` cuts
    (they lose their end, the final answer included, and their EOS); rows whose label is longer
    than the capability's generation budget (a model that learned them is cut off before it
    writes the final answer); and the longest label, in tokens of this tokenizer."""
    out = {}
    for cap, g in df.groupby("capability", sort=True):
        prompts = [len(prompt_ids(tok, p)) for p in g["prompt"]]
        labels = [len(tok(lab, add_special_tokens=False)["input_ids"]) for lab in g["label_text"]]
        budget = registry.get(cap).max_new_tokens
        out[cap] = {"rows": len(g), "truncated": sum(p + a + 1 > max_length for p, a in zip(prompts, labels)),
                    "over_budget": sum(a > budget for a in labels), "longest_label": max(labels)}
    return out


def length_warnings(report: dict[str, dict[str, int]], max_length: int) -> list[str]:
    """What a training stage says about its rows' lengths (`length_report`)."""
    out = []
    for cap, r in report.items():
        if r["truncated"] > TRUNCATED_WARN * r["rows"]:
            out.append(f"{cap}: {r['truncated']} of {r['rows']} rows exceed train.max_length={max_length} "
                       "and lose their end and EOS; raise train.max_length")
        if r["over_budget"]:
            out.append(f"{cap}: {r['over_budget']} of {r['rows']} labels are longer than the generation budget "
                       f"of {registry.get(cap).max_new_tokens} tokens (longest {r['longest_label']}): "
                       "outputs that follow them are cut before the answer")
    return out
