"""Fine-tuning through Ray Train's TorchTrainer: causal-LM SFT (loss on answer tokens only) and,
with another `Task`, the reward model's classification training (stages/reward.py).

`train.num_workers: 0` runs Ray Train's local mode: the same `ray.train` API without a worker
group, in a Ray task that holds `cpus_per_worker` CPUs (a task, not the trial's own process,
because Ray refuses `ray.train` calls inside a Tune session). On this 2-core machine that removes
most of Ray Train's fixed cost per `fit()` (controller, worker-group start, polling; measured in
benchmarks/overhead.py), which the tiny sweep pays dozens of times. `num_workers >= 1` runs a
worker group, DDP or FSDP (stages/parallel.py), that checkpoints as it goes and resumes a run
of the same name (the artifact key) after the driver died.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from typing import Any

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from w2s_ray.artifacts import Artifact, Store
from w2s_ray.capabilities import registry
from w2s_ray.config import TrainHParams
from w2s_ray.models import resources
from w2s_ray.models.tokenizer import load_tokenizer, prompt_ids, save_checkpoint, tokenizer_path
from w2s_ray.stages import engines, parallel
from w2s_ray.stages.context import ModelRef, StageContext, local_model_path
from w2s_ray.stages.data import TABLE

log = logging.getLogger(__name__)

# 2: a batch never mixes capabilities; the batch plan no longer depends on the number of ranks
VERSION = 2
#: a stage warns when more than this share of a capability's rows is cut at train.max_length
TRUNCATED_WARN = 0.01
OWN_RESOURCES = PlacementGroupSchedulingStrategy(placement_group=None)
METRICS = "train_metrics.json"


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


Buckets = list[dict[str, torch.Tensor]]


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


def encode_buckets(tok, df, max_length: int) -> Buckets:
    """One fixed-shape block per capability: a batch never mixes capabilities, so short answers
    do not pay for the longest capability's width, and the few distinct shapes keep CPU kernels
    warm (a new shape per batch was measured ~4x slower)."""
    return [encode(tok, g["prompt"].tolist(), g["label_text"].tolist(), max_length)
            for _, g in df.groupby("capability", sort=True)]


def batch_plan(sizes: list[int], batch_size: int, epochs: float,
               gen: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """(bucket, row indices) per step: each epoch shuffles rows within buckets, cuts them into
    batches, and shuffles the batches across buckets. Every rank computes the same plan, and it
    does not depend on the number of ranks, so a model's key need not name its layout."""
    one_epoch = sum(max(1, -(-n // batch_size)) for n in sizes)
    steps = max(1, math.ceil(epochs * one_epoch))
    plan: list[tuple[int, torch.Tensor]] = []
    while len(plan) < steps:
        epoch = [(b, chunk) for b, n in enumerate(sizes)
                 for chunk in torch.randperm(n, generator=gen).split(batch_size)]
        plan += [epoch[i] for i in torch.randperm(len(epoch), generator=gen).tolist()]
    return plan[:steps]


def lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def lr_factor(hp: TrainHParams, steps: int):
    """Warmup, then cosine / linear decay or constant: the multiplier of step `step`."""
    warmup = int(hp.warmup_fraction * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        if hp.schedule == "constant":
            return 1.0
        if hp.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def optimize(model, buckets: Buckets, hp: TrainHParams, seed: int, rank: int = 0,
             world: int = 1, loss_fn=lm_loss, checkpoints: bool = False) -> dict[str, float]:
    """The optimisation loop: AdamW, warmup then decay; each step's global batch is split over
    workers, then over `grad_accum` micro-batches, so it stays `batch_size` rows exactly. With
    `checkpoints`, a resumable checkpoint is reported every `checkpoint_every` steps (or epoch)
    and a restarted run continues from the last one: the batch plan is a function of the seed."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [len(b["input_ids"]) for b in buckets]
    plan = batch_plan(sizes, hp.batch_size, hp.epochs, gen)
    steps = len(plan)
    every = hp.checkpoint_every or max(1, math.ceil(steps / math.ceil(hp.epochs)))
    dev = parallel.device(hp, world)
    # foreach=False, the loop torch already runs on CPU: on CUDA its default (foreach) would hold
    # a temporary copy of every parameter during the step, 14 GB per GPU in the 72B plan.
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(hp, steps))
    done = (parallel.restore(model, opt, sched) if checkpoints else None) or {
        "step": 0, "losses": [], "samples": 0, "compute_seconds": 0.0}
    resumed_at, resume_reads = done["step"], done.pop("resume_reads", None)
    start = time.perf_counter() - done["compute_seconds"]
    model.train()
    for step in range(done["step"], steps):
        bucket, idx = plan[step]
        mine = idx.tensor_split(world)[rank]
        # Every rank runs the same number of micro-batches (FSDP gathers weights per forward),
        # a rank without rows of a batch smaller than the world a zero-weighted one; each row
        # weighs 1/len(idx) once DDP / FSDP average the ranks' gradients.
        parts = max(1, min(hp.grad_accum, len(idx) // world))
        rows = mine if len(mine) else idx[:1]
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for i, micro in enumerate(rows.tensor_split(parts)):
            batch = {k: v[micro].to(dev) for k, v in buckets[bucket].items()}
            with parallel.gradient_sync(model, i == parts - 1), parallel.autocast(hp, dev):
                loss = loss_fn(model, batch)
                (loss * (len(micro) * world / len(idx) if len(mine) else 0.0)).backward()
            step_loss += (loss * (len(micro) / len(rows))).item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        done["losses"].append(step_loss)
        done["samples"] += len(idx)
        done["step"] = step + 1
        if checkpoints and (done["step"] % every == 0) and done["step"] < steps:
            done["compute_seconds"] = time.perf_counter() - start
            parallel.save_resumable(model, opt, sched, done, {"step": done["step"], "loss": step_loss})
    return {"steps": steps, "rows": sum(sizes), "samples": done["samples"],
            "first_loss": done["losses"][0], "final_loss": done["losses"][-1],
            "losses": done["losses"], "resumed_at_step": resumed_at, "resume_reads": resume_reads,
            "compute_seconds": time.perf_counter() - start}


class SFTTask:
    """Causal-LM fine-tuning on (prompt, label_text) rows. A task object travels inside the train
    loop's config, so it holds no state beyond what it needs to be rebuilt on a worker."""

    stage, version = "sft", VERSION
    loss = staticmethod(lm_loss)

    def load(self, path: str):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def empty(self, path: str):
        """The architecture without weights (built under the meta device by FSDP's ranks > 0)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)

    def buckets(self, tok, df, hp: TrainHParams) -> Buckets:
        return encode_buckets(tok, df, hp.max_length)

    @staticmethod
    def lengths(tok, df, hp: TrainHParams) -> dict[str, dict[str, int]]:
        return length_report(tok, df, hp.max_length)


def toward_base(model, base: dict[str, torch.Tensor], share: float) -> None:
    """Move every weight `share` of the way back to the base's. Parameters, not the state dict:
    tied embeddings are one parameter under two state-dict names and must move once."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.lerp_(base[name].to(p.device), share)


def anchor_weights(task, cfg: dict[str, Any], model) -> dict[str, torch.Tensor]:
    """The weights averaging moves back toward: the loaded base's, or the `anchor` model's."""
    if cfg.get("anchor") is None:
        return {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters()}
    anchor = task.load(local_model_path(cfg["root"], *cfg["anchor"]))
    prefix = "module." if hasattr(model, "module") else ""  # DDP's names
    return {prefix + k: p.detach() for k, p in anchor.named_parameters()}


def train_loop(cfg: dict[str, Any]) -> None:
    task = cfg["task"]
    tc = ray.train.get_context()
    rank, world = tc.get_world_rank(), tc.get_world_size()
    hp = TrainHParams(**cfg["hp"])
    torch.set_num_threads(hp.torch_threads)
    torch.manual_seed(cfg["seed"])
    store = Store(cfg["root"])
    path = local_model_path(cfg["root"], cfg["source"], cfg["stored"],
                            weights=parallel.reads_weights(hp, rank, world))
    tok = load_tokenizer(path)
    model = parallel.load(task, path, hp, rank, world)
    df = store.read_table(cfg["data"])
    base = anchor_weights(task, cfg, model) if hp.toward_base else None
    # Local mode (num_workers 0) keeps no checkpoint Ray could restore, so it writes none.
    metrics = optimize(model, task.buckets(tok, df, hp), hp, cfg["seed"], rank, world, task.loss,
                       checkpoints=hp.num_workers > 0)
    if base is not None:
        toward_base(model, base, hp.toward_base)
    metrics["lengths"] = task.lengths(tok, df, hp)
    # Gathering the full weights is a collective (FSDP): every rank takes part, rank 0 saves.
    weights = parallel.full_state_dict(model, hp) if world > 1 else None
    if rank == 0:
        trained = model.module if hasattr(model, "module") else model
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(trained, tok, tmp, own_subfolder=tokenizer_path(path) != path,
                            state_dict=weights)
            with open(f"{tmp}/{METRICS}", "w") as f:
                json.dump(metrics, f)
            store.upload_dir(tmp, cfg["out"])
    ray.train.report({k: v for k, v in metrics.items() if k not in ("losses", "lengths")})


def fit(cfg: dict[str, Any], hp: TrainHParams, run: RunConfig) -> None:
    scaling = ScalingConfig(num_workers=hp.num_workers, use_gpu=hp.use_gpu,
                            resources_per_worker={"CPU": hp.cpus_per_worker})
    TorchTrainer(train_loop, train_loop_config=cfg, scaling_config=scaling, run_config=run).fit()


@ray.remote
def _fit_local(cfg: dict[str, Any], run: RunConfig) -> None:
    fit(cfg, TrainHParams(**cfg["hp"]), run)


#: How the work is laid out, not what is computed: excluded from the artifact key.
LAYOUT = {"num_workers", "cpus_per_worker", "use_gpu", "torch_threads", "strategy", "grad_accum",
          "activation_checkpointing", "checkpoint_every", "plan"}


def identity(hp: TrainHParams) -> dict[str, Any]:
    """The optimisation recipe that names a trained model. fp32 runs omit `mixed_precision`, and
    runs without weight averaging `toward_base`, so their keys stay those of stores written
    before the fields existed."""
    out = hp.model_dump(exclude=LAYOUT)
    if out["mixed_precision"] == "no":
        del out["mixed_precision"]
    if not out["toward_base"]:
        del out["toward_base"]
    return out


def stage_hparams(ctx: StageContext, base: ModelRef, hp: TrainHParams | None) -> TrainHParams:
    """The stage's hyper-parameters; with `train.plan`, the layout of the base's size."""
    hp = hp or ctx.config.train
    if not hp.plan or base.rung is None:
        return hp
    size = resources.size_of(ctx.config.ladder.rung(base.rung))
    return resources.training_hparams(hp, size) if size else hp


def train(ctx: StageContext, base: ModelRef, data: Artifact, task, hp: TrainHParams | None = None,
          tag: str = "train", anchor: ModelRef | None = None) -> Artifact:
    """Train `base` on the rows of `data` with `task`; returns the model artifact. Weight
    averaging (`toward_base`) moves back toward `anchor`'s weights when given, else the base's."""
    hp = stage_hparams(ctx, base, hp)
    anchor = anchor if hp.toward_base else None
    inputs = [base.id, data.id] + ([anchor.id] if anchor else [])
    art = Artifact.make(task.stage, task.version, inputs, {"hp": identity(hp), "seed": ctx.seed})
    if base.rung is not None:
        ctx.rungs[art.id] = base.rung

    def build(folder: str) -> dict:
        rows = len(ctx.store.read_table(f"{ctx.store.location(data)}/{TABLE}"))
        if rows == 0:
            raise ValueError(f"{tag}: the training table {data.id} is empty; nothing to train on")
        cfg = {"root": ctx.store.root, "source": base.source, "stored": base.stored,
               "data": f"{ctx.store.location(data)}/{TABLE}", "out": folder, "hp": hp.model_dump(),
               "seed": ctx.seed, "task": task, "anchor": (anchor.source, anchor.stored) if anchor else None}
        # A stable run name under the store: a rerun after the driver died finds the run's
        # checkpoints there and resumes (ray.train.get_checkpoint); a lost worker is retried.
        name = f"{task.stage}-{art.key}"
        run = RunConfig(name=name, storage_path=ctx.store.uri("ray_train"),
                        failure_config=FailureConfig(max_failures=3),
                        checkpoint_config=CheckpointConfig(num_to_keep=1))
        if hp.use_gpu:
            # Idle inference engines hold GPUs this training run needs.
            ray.get(engines.book().release_idle.remote())
        if hp.num_workers == 0:
            # Outside the trial's placement group: the trial itself reserves almost nothing.
            local = _fit_local.options(num_cpus=hp.cpus_per_worker, scheduling_strategy=OWN_RESOURCES)
            ray.get(local.remote(cfg, run))
        else:
            fit(cfg, hp, run)
        with ctx.store.fs.open_input_stream(f"{folder}/{METRICS}") as f:
            metrics = json.loads(f.read())
        for warning in length_warnings(metrics["lengths"], hp.max_length):
            log.warning("%s %s: %s", tag, art.key[:8], warning)
        # The model is in `folder`; the run's resumable state (72B: 1.2 TB of shards) is not needed.
        if ctx.store.exists(ctx.store.path("ray_train", name)):
            ctx.store.fs.delete_dir(ctx.store.path("ray_train", name))
        return metrics

    return ctx.builder.ensure(art, build, tag=tag)


def sft(ctx: StageContext, base: ModelRef, data: Artifact, hp: TrainHParams | None = None,
        tag: str = "sft", anchor: ModelRef | None = None) -> Artifact:
    """Fine-tune `base` on the (prompt, label_text) rows of `data`; returns the model artifact."""
    return train(ctx, base, data, SFTTask(), hp, tag, anchor)
