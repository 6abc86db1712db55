"""Calibrate the tiny ladder's read-off: pretrain a rung with several step budgets, probe each.

    python -m w2s_ray.ladder.calibrate t2:420 t2:500 t3:650 [--keep DIR] [--seed 1]

Each budget is a full schedule of its own (warm-up, peak, linear decay to zero), exactly as the
builder runs it, and the knowledge probe reads the val partition, never a test split. Put the
chosen budgets into `ladder_recipe.RECIPE` and the numbers into docs/tiny-ladder.md. `--keep` saves each
checkpoint as DIR/RUNG:STEPS (loadable like a hub checkpoint) to try W2S on it before choosing;
`--seed` pretrains with another seed (corpus draw, initialisation, row order).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import ray

from w2s_ray.ladder import recipe as ladder_recipe
from w2s_ray.ladder import tiny_ladder
from w2s_ray.models.tokenizer import build_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("budgets", nargs="+", metavar="RUNG:STEPS")
    p.add_argument("--keep", metavar="DIR", help="save the checkpoints here instead of discarding them")
    p.add_argument("--seed", type=int, default=ladder_recipe.RECIPE.seed, help="pretraining seed")
    args = p.parse_args()
    recipe = dataclasses.replace(ladder_recipe.RECIPE, seed=args.seed)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="w2s_ray")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or tmp
        build_tokenizer(tiny_ladder.vocabulary(recipe)).save_pretrained(f"{tmp}/tokenizer")
        jobs = {}
        for item in args.budgets:
            name, steps = item.split(":")
            rung = dataclasses.replace(recipe.rung(name), steps=int(steps))
            jobs[item] = tiny_ladder.pretrain_rung.remote(recipe, rung, f"{tmp}/tokenizer", f"{out}/{item}")
        for item, ref in jobs.items():
            stats = ray.get(ref)
            print(f"{item}: {stats['seconds']:.0f}s probe {stats['probe']}", flush=True)


if __name__ == "__main__":
    main()
