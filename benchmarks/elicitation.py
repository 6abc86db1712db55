"""Does the tiny testbed need elicitation? weak / strong-base / icl / wts / ceiling per pair, per prompt form.

    python benchmarks/elicitation.py --form skip --lr 1e-4 --epochs 4 \
        --rungs t1=PATH t2=PATH ... --pairs t1:t2 t2:t3 [--split val]

The lab loop behind round 4 of docs/tiny-ladder.md: one process, one thread, no Ray, the engine's
own capabilities, fine-tuning loop (`runtime.trainer.optimize`) and generation backend, on the
validation partition by default (never test unless asked). The rungs are any checkpoints, e.g.
the built ladder's folders or `python -m w2s_ray.ladder.calibrate ... --keep DIR`.

Prompt forms (the engine's tiny capabilities use `skip-arithmetic-cue` since round 4):
  cue       the prompt ends in the main pretraining cue ("... answer : a kofel lasts a few" -> "days .")
  skip      another ending ("... answer : the kofel lasts" -> "days ."), so the untrained model's
            likely next word is not the answer: the answer form has to be elicited
  skip-arithmetic-cue  skip, but arithmetic keeps its cue (its chain broke when "costs" was cut)
  question  no cue at all ("... how long does a kofel last ? answer :" -> "days .")
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from w2s_ray.capabilities import registry
from w2s_ray.config import TrainHParams
from w2s_ray.methods.baselines import with_shots
from w2s_ray.models.tokenizer import load_tokenizer, save_checkpoint
from w2s_ray.runtime.backends import TransformersBackend
from w2s_ray.runtime.encoding import encode
from w2s_ray.runtime.trainer import optimize, toward_base

CAPS = ("scan", "arithmetic", "facts", "temporal")
FORMS = ("cue", "skip", "skip-arithmetic-cue", "question")
#: per capability: the (cue, skip, question) endings of the prompt around the item's own word(s)
ENDINGS = {
    "scan": (" to {x} , do", " to {x} ,", ""),
    "temporal": (" a {x} lasts a few", " the {x} lasts", ""),
    "facts": (" {x} is a", " a {x} is", ""),
    "arithmetic": (" a {x} costs", " a {x}", " answer :"),
}
#: the form of the engine's prompts (round 4): skip, but arithmetic ends in its cue
ENGINE = {"scan": 1, "temporal": 1, "facts": 1, "arithmetic": 0}
#: the item's own word(s) in the engine's prompt
ITEM = {"scan": lambda p: p.rsplit(" to ", 1)[1][: -len(" ,")], "temporal": lambda p: p.split()[-2],
        "facts": lambda p: p.split()[-2], "arithmetic": lambda p: p.split()[-2]}


def reform(cap: str, prompt: str, form: str) -> str:
    """The engine's prompt in another form."""
    endings = [e.format(x=ITEM[cap](prompt)) for e in ENDINGS[cap]]
    engine = endings[ENGINE[cap]]
    assert prompt.endswith(engine), (cap, prompt, engine)
    want = {"cue": 0, "skip": 1, "question": 2, "skip-arithmetic-cue": ENGINE[cap]}[form]
    return prompt[: len(prompt) - len(engine)] + endings[want]


def tables(sizes: tuple[int, int, int], split: str, seed: int, form: str) -> list[pd.DataFrame]:
    """D^a, D^b and the evaluation split, drawn by the capabilities as a sweep draws them."""
    sizes_by = dict(zip(("labeled", "unlabeled", "test"), sizes))
    rows = {s: [] for s in sizes_by}
    for cap in CAPS:
        carved = registry.get(cap).splits(seed, sizes_by, None, "validation" if split == "validation" else "test")
        for name, items in carved.items():
            rows[name] += [{"uid": f"{cap}-{name}-{i}", "capability": cap, "prompt": reform(cap, ex.prompt, form),
                            "label_text": ex.label_text, "gold": ex.gold} for i, ex in enumerate(items)]
    return [pd.DataFrame(rows[s]) for s in sizes_by]


def generate(path: str, df: pd.DataFrame) -> list[str]:
    backend = TransformersBackend(path, 1, "float32")
    out = []
    for cap, group in df.groupby("capability", sort=False):
        c = registry.get(cap)
        for i in range(0, len(group), 128):
            chunk = group.iloc[i : i + 128]
            out += list(backend({"prompt": chunk["prompt"].to_numpy(dtype=object),
                                 "max_new_tokens": np.full(len(chunk), c.max_new_tokens),
                                 "stop": np.array([c.stop] * len(chunk), dtype=object)})["completion"])
    return out


def accuracy(path: str, df: pd.DataFrame) -> dict[str, float]:
    right = [registry.get(cap).score(registry.get(cap).extract(c), gold)
             for cap, c, gold in zip(df["capability"], generate(path, df), df["gold"])]
    acc = pd.Series(right, index=df["capability"]).groupby(level=0, sort=False).mean()
    return {**acc.round(3).to_dict(), "avg": round(float(acc.mean()), 3)}


def finetune(path: str, df: pd.DataFrame, hp: TrainHParams, seed: int, out: str) -> str:
    """Fine-tune as the engine's train loop does, weight averaging toward the base included."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    buckets = [encode(tok, g["prompt"].tolist(), g["label_text"].tolist(), hp.max_length)
               for _, g in df.groupby("capability", sort=True)]
    optimize(model, buckets, hp, seed=seed)
    toward_base(model, base, hp.toward_base)
    save_checkpoint(model, tok, out, own_subfolder=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rungs", nargs="+", required=True, metavar="NAME=PATH")
    p.add_argument("--pairs", nargs="+", required=True, metavar="WEAK:STRONG")
    p.add_argument("--form", choices=FORMS, default="cue")
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--toward-base", type=float, default=0.0,
                   help="after fine-tuning, move every weight this share of the way back to the base's")
    p.add_argument("--sizes", type=int, nargs=3, default=(200, 200, 150), metavar=("LABELED", "UNLABELED", "EVAL"))
    args = p.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    rungs = dict(r.split("=", 1) for r in args.rungs)
    hp = TrainHParams(epochs=args.epochs, batch_size=32, lr=args.lr, weight_decay=0.0, schedule="linear",
                      warmup_fraction=0.1, max_length=96, toward_base=args.toward_base)
    da, db, ev = tables(args.sizes, args.split, args.seed, args.form)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs:
            weak_name, strong_name = pair.split(":")
            weak = finetune(rungs[weak_name], da, hp, args.seed, f"{tmp}/weak-{pair}")
            labels = db.assign(label_text=[c.split(" .")[0] + " ." if registry.get(cap).stop else c
                                           for cap, c in zip(db["capability"], generate(weak, db))])
            strong = rungs[strong_name]
            row = {"pair": pair, "form": args.form, "split": args.split, "lr": args.lr, "epochs": args.epochs,
                   "toward_base": args.toward_base, "seed": args.seed, "weak": accuracy(weak, ev), "strong-base": accuracy(strong, ev),
                   "icl": accuracy(strong, with_shots(ev, da, args.seed)),
                   "wts": accuracy(finetune(strong, labels, hp, args.seed, f"{tmp}/wts-{pair}"), ev),
                   "ceiling": accuracy(finetune(strong, db, hp, args.seed, f"{tmp}/ceiling-{pair}"), ev)}
            gap = row["ceiling"]["avg"] - row["weak"]["avg"]
            row["pgr"] = round((row["wts"]["avg"] - row["weak"]["avg"]) / gap, 3) if gap else None
            row["seconds"] = round(time.perf_counter() - start)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
