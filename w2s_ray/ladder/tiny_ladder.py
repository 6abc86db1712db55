"""The tiny ladder's builder: Qwen2-architecture rungs pretrained by this project on a synthetic
corpus, as `recipe.py` says (the one place that decides sizes, budgets and the corpus). The built ladder
lands in a per-machine cache folder named by the hash of what the rungs share (corpus, tokenizer,
optimiser), with one `save_pretrained` folder per rung named by the rung's own hash, each loadable
with `AutoModelForCausalLM.from_pretrained` like a hub checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
import uuid
from pathlib import Path

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from w2s_ray.capabilities import registry
from w2s_ray.capabilities.world import BRIDGE_WORDS, bridge_lines, knowing
from w2s_ray.ladder.probe import knowledge_probe
from w2s_ray.ladder.recipe import (
    BRIDGE,
    RECIPE,
    LadderRecipe,
    RungRecipe,
    ladder_dir,
    packaged_path,
    rung_path,
)
from w2s_ray.models.tokenizer import build_tokenizer, save_checkpoint

log = logging.getLogger(__name__)

#: seconds between a pretraining rung's progress reports
REPORT_EVERY_S = 2.0


def corpus(recipe: LadderRecipe, knows: float = 1.0) -> list[str]:
    rng = random.Random(recipe.seed)
    lines = []
    with knowing(knows):
        for name, share in recipe.mixture:
            n = round(share * recipe.corpus_docs)
            lines += bridge_lines(rng, n) if name == BRIDGE else registry.get(name).pretrain_lines(rng, n)
    rng.shuffle(lines)
    return lines


def vocabulary(recipe: LadderRecipe) -> set[str]:
    return BRIDGE_WORDS.union(*(registry.get(c).vocabulary() for c in recipe.capabilities))


def model_config(recipe: LadderRecipe, rung: RungRecipe, vocab_size: int, eos_id: int, pad_id: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=rung.hidden, intermediate_size=4 * rung.hidden,
        num_hidden_layers=rung.layers, num_attention_heads=rung.heads,
        num_key_value_heads=rung.heads, head_dim=rung.hidden // rung.heads,
        max_position_embeddings=256, tie_word_embeddings=True,
        eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id,
    )


def packed_batches(ids: list[int], seq_len: int) -> torch.Tensor:
    """The corpus as one token stream cut into fixed-shape rows (fixed shapes are ~4x faster on CPU)."""
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


@ray.remote(num_cpus=1)
def pretrain_rung(recipe: LadderRecipe, rung: RungRecipe, tok_dir: str, out_dir: str,
                  report_to: tuple[str, str] | None = None) -> dict:
    """Pretrain one rung into `out_dir`. With `report_to` (store root, folder) its step count is
    written there every few seconds, for the sweep's progress display."""
    from ray.experimental.tqdm_ray import tqdm
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from w2s_ray.artifacts import Store

    def report(step: int) -> None:
        if report_to is not None:
            store, folder = Store(report_to[0]), report_to[1]
            store.write_json(f"{folder}/ladder-{rung.name}.json",
                             {"what": f"tiny ladder {rung.name}", "step": step, "steps": rung.steps,
                              "seconds": time.time() - start})

    torch.set_num_threads(1)
    torch.manual_seed(recipe.seed)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    text = f" {tok.eos_token} ".join(corpus(recipe, rung.knows))
    rows = packed_batches(tok(text)["input_ids"], recipe.seq_len)
    model = Qwen2ForCausalLM(model_config(recipe, rung, len(tok), tok.eos_token_id, tok.pad_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=rung.lr, weight_decay=recipe.weight_decay,
                            betas=recipe.adam_betas)

    decay_from = int(rung.steps * (1 - recipe.decay_fraction))

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        return min(1.0, 1 - (step - decay_from) / (rung.steps - decay_from))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    # Every rung reads the same fixed permutation of the packed rows, without replacement.
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(recipe.seed))
    model.train()
    start = time.time()
    bar = tqdm(total=rung.steps, desc=f"pretrain {rung.name}")
    reported = start
    for step in range(rung.steps):
        if time.time() - reported >= REPORT_EVERY_S:
            report(step)
            reported = time.time()
        first = (step * recipe.batch_size) % len(rows)
        batch = rows[order[first : first + recipe.batch_size]]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.update(1)
    bar.close()
    report(rung.steps)
    seconds = time.time() - start
    save_checkpoint(model, tok, out_dir, own_subfolder=True)
    params = sum(p.numel() for p in model.parameters())
    return {"rung": rung.name, "params": params, "final_loss": loss.item(), "seconds": seconds,
            "probe": knowledge_probe(out_dir, recipe.capabilities)}


def build_ladder(names: list[str] | None = None, recipe: LadderRecipe = RECIPE, packaged: bool = True,
                 report_to: tuple[str, str] | None = None) -> Path:
    """Build the named rungs (default: all) once per machine; each rung folder appears whole.

    A rung the package ships for this recipe (`recipe.packaged_path`) is copied; `packaged=False`
    pretrains it all the same (to check the shipped weights). Rungs pretrain in parallel as Ray
    tasks of one CPU each, reporting their steps to `report_to` (see `pretrain_rung`); a finished
    rung is never rebuilt and a half-built one (its staging folder) is never read.
    """
    final = ladder_dir(recipe)
    wanted = [r for r in recipe.rungs if names is None or r.name in names]
    missing = [r for r in wanted if not (rung_path(r.name, recipe) / "config.json").exists()]
    if not missing:
        return final
    final.mkdir(parents=True, exist_ok=True)
    for r in [r for r in missing if packaged and (packaged_path(r.name, recipe) / "model.safetensors").exists()]:
        staging = final / f"{r.name}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(packaged_path(r.name, recipe), staging)
        _publish(staging, rung_path(r.name, recipe))
        missing.remove(r)
        log.info("tiny ladder rung %s: copied from the package", r.name)
    if not missing:
        return final
    tok_dir = final / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        staging = final / f"tokenizer.tmp-{uuid.uuid4().hex[:8]}"
        build_tokenizer(vocabulary(recipe)).save_pretrained(staging)
        _publish(staging, tok_dir)
    log.info("building tiny ladder %s rungs %s into %s", recipe.key(), [r.name for r in missing], final)
    staged = {r.name: final / f"{r.name}.tmp-{uuid.uuid4().hex[:8]}" for r in missing}
    # Longest first, so the two CPUs finish together.
    missing.sort(key=lambda r: -r.steps * r.hidden**2 * r.layers)
    # On this node: the rungs are written to this machine's cache, which no other node can see.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    stats = ray.get([pretrain_rung.options(scheduling_strategy=here).remote(
        recipe, r, str(tok_dir), str(staged[r.name]), report_to) for r in missing])
    for s in stats:
        (staged[s["rung"]] / "pretrain.json").write_text(
            json.dumps({**s, "recipe": dataclasses.asdict(recipe.rung(s["rung"]))}, indent=1))
        _publish(staged[s["rung"]], rung_path(s["rung"], recipe))
        log.info("rung %s: %d params, loss %.3f, %.0fs, knowledge probe %s", s["rung"], s["params"],
                 s["final_loss"], s["seconds"], s["probe"])
    return final


def _publish(staging: Path, target: Path) -> None:
    try:
        staging.rename(target)
    except OSError:  # built concurrently by another process: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
