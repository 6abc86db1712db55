"""`--dry-run`: the grid's stage graph, what is already committed, each stage's resource request
and GPU-hours, without Ray, downloads or any heavy work.

The recipes run as they do in a sweep, but against a planning builder whose `ensure` records the
artifact and its log fields instead of building it, so the graph is the real one, deduplicated
by the same content keys. The naive figure plans every (pair, seed, method) with a fresh builder:
every stage a method needs is rerun for it, as in openai/weak-to-strong's sweep.

Throughput model (A100 80 GB, bf16; the hardware figures are `hardware.py`'s, measured by the
preflight where the store holds its record, assumed otherwise):
- training: tokens x 6 x params / (peak TFLOP/s x MFU), tokens = rows x epochs x TRAIN_TOKENS;
- training with the auxiliary confidence loss (`wts-aux-conf`): one more forward pass per step,
  tokens x 8 x params;
- reward scoring and the weak model's label log-probabilities (`label_confidence`): a forward
  pass, tokens x 2 x params at the same MFU;
- vLLM generation: output tokens (rows x the capability's max_new_tokens, an upper bound: greedy
  stops at EOS; sampling: k rows per item) / tokens per GPU-second, batched greedy decoding: VLLM_TOKENS_PER_GPU_S's figures
  at the Qwen-1.5 sizes' parameter counts, interpolated (log-log) between them and extended
  along the nearest segment's slope beyond them.
- an engine start: bf16 weights read at the weight-load rate plus ENGINE_WARMUP_S (CUDA graphs, KV cache
  profiling), on every GPU of the engine. Engine hosts (runtime/engines.py) start one per model;
  the figure per inference stage is what a fresh engine per stage costs, and the real count lies
  between the two when training stops idle hosts for its GPUs.
- a training checkpoint (as many as `models/checkpointing.py` says the stage writes): fp32 weights
  and AdamW's two moments, each node's share staged on its local disk, then uploaded to the
  store, while the gang's GPUs wait.
- answers' log-probabilities (DPO's reference, the implicit reward): a forward pass, as scoring;
- DPO: SFT's figure with two sequences per row (chosen and rejected), its rows at most D^b's
  items; its memory is SFT's with two sequences per row (the reference is precomputed).
Training rows are upper bounds where a table is filtered (selection, subsets, pairs): D^b's size.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from w2s_ray import analysis, hardware, methods
from w2s_ray.artifacts import Artifact, Store
from w2s_ray.capabilities import registry
from w2s_ray.config import SweepConfig
from w2s_ray.models import checkpointing, layout, resources, rungs
from w2s_ray.stages import data, fetch
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.evaluate import predictions

MFU = 0.35
TRAIN_TOKENS = 300  # mean prompt + answer tokens per training row (padded per capability bucket)
#: decoded tokens per GPU-second by parameter count (Qwen-1.5 0.5B ... 72B)
VLLM_TOKENS_PER_GPU_S = {0.62e9: 20000, 1.84e9: 12000, 3.95e9: 7000, 7.72e9: 4500, 14.2e9: 2500,
                         32.5e9: 1200, 72.3e9: 600}
GPU_STAGES = ("sft", "reward_model", "generate", "reward_scores", "label_confidence", "sample", "logprobs", "dpo")
INFERENCE_STAGES = ("generate", "reward_scores", "label_confidence", "sample", "logprobs")
TRAINING = ("sft", "reward_model", "dpo")
#: training FLOPs per parameter and token: forward + backward, and a loss's extra passes
TRAIN_FLOPS = {None: 6, "logconf": 8}
#: answers scored per row by a log-probability stage, by its tag (else 1)
LOGPROB_COLUMNS = {"reference_logprobs": 2}
ENGINE_WARMUP_S = 60.0
GPUS_PER_NODE = 8  # the cluster files' GPU nodes (p4de.24xlarge, a2-ultragpu-8g)
MODEL_INPUTS = ("sft/", "reward_model/", "dpo/", "fetch/", "base:")


class PlanStore(Store):
    """Answers `location` without reading a marker: planned artifacts have none yet."""

    def location(self, art: Artifact) -> str:
        return self.path("artifacts", art.stage, art.key, "planned")


@dataclass
class PlanBuilder:
    """Records each artifact a recipe asks for (once, in order) instead of building it."""

    store: Store
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    builds: bool = field(default=False, init=False)

    def ensure(self, art: Artifact, build: Callable, **log: Any) -> Artifact:
        self.stages.setdefault(art.id, {"stage": art.stage, "key": art.key, "inputs": art.inputs, **log})
        return art


def trial_stages(ctx: StageContext, weak: str, strong: str, names: list[str]) -> None:
    """What `sweep.run_trial` asks for, through the same calls: each method, its evaluation's
    generations, and the artifacts of the pair's analyses."""
    test = data.split_table(ctx, "test", with_gold_labels=True)
    for name in names:
        with contextlib.suppress(methods.NotApplicable):
            predictions(ctx, methods.targets(ctx, name, weak, strong, test))
    analysis.pair_artifacts(ctx, weak, strong, names)


def plan_stages(config: SweepConfig, naive: bool = False) -> list[dict[str, Any]]:
    """The stages of the grid, deduplicated by key (or, naive, once per pair x seed x method)."""
    store = PlanStore(config.storage)
    shared = PlanBuilder(store)
    out: list[dict[str, Any]] = []
    for weak, strong in config.pair_list():
        for seed in config.seeds:
            groups = [[m] for m in config.methods] if naive else [config.methods]
            for names in groups:
                builder = PlanBuilder(store) if naive else shared
                ctx = StageContext(config, store, builder, seed, pair=(weak, strong))
                trial_stages(ctx, weak, strong, names)
                sizes = dict(ctx.rungs)
                for stage in builder.stages.values():
                    stage.setdefault("rung", rung_of(ctx, stage, sizes))
                if naive:
                    out += builder.stages.values()
    return out if naive else list(shared.stages.values())


def rung_of(ctx: StageContext, stage: dict[str, Any], trained: dict[str, str]) -> str | None:
    """The rung whose weights a GPU stage runs: that of the first input that is a base model or
    a trained one (the base, or the model that generates or scores)."""
    if stage["stage"] == "fetch":
        return stage["tag"]
    bases = {ctx.base_id(r.name): r.name for r in ctx.config.ladder.rungs}
    return next((bases.get(i) or trained[i] for i in stage["inputs"] if i in bases or i in trained), None)


def rows(config: SweepConfig, stage: dict[str, Any]) -> tuple[int, int]:
    """(rows, generated tokens) of a stage, from the split sizes (upper bounds, module doc)."""
    caps = config.capabilities
    split = {s: {c: getattr(config.sizes_for(c), s) for c in caps} for s in ("labeled", "unlabeled", "test")}
    which = "test" if stage.get("tag") == "evaluate" else "labeled" if stage.get("tag") == "weak" else "unlabeled"
    per_cap = split[which]
    n = sum(per_cap.values()) * (2 if stage.get("tag") in ("mixed", "reward_scores") else 1)
    if stage.get("tag") == "wts-s":
        n //= len(caps)
    if stage["stage"] == "logprobs":
        n *= LOGPROB_COLUMNS.get(stage.get("tag"), 1)
    tokens = sum(per_cap[c] * registry.get(c).max_new_tokens for c in caps)
    if stage["stage"] == "sample":
        n, tokens = n * config.w2sr.samples, tokens * config.w2sr.samples
    return n, tokens


def stage_memory_gb(config: SweepConfig, stage: dict[str, Any]) -> float | None:
    """Estimated peak memory per GPU of a GPU stage in the layout it will actually run with (the
    plan's layout where `plan: true`, else the config's own fields); None for a CPU stage."""
    rung = stage.get("rung")
    resolved = layout.resolve(config, rung) if rung else None
    if resolved is None or resolved.arch is None:
        return None
    arch = resolved.arch
    if stage["stage"] in TRAINING:
        return resources.training_estimate_gb(arch, training_recipe(resolved, stage),
                                              2 if stage["stage"] == "dpo" else 1)
    if stage["stage"] in INFERENCE_STAGES:
        inf = resolved.inference
        if not inf.gpus_per_actor:
            return None
        tp = resources.InferPlan(inf.tensor_parallel_size)
        need = resources.infer_memory_gb(arch, tp, dtype_bytes=4 if inf.dtype == "float32" else 2)
        return resources.GPU_GB - need["kv_cache"] if need["max_num_seqs"] >= 1 else float("inf")
    return None


def training_recipe(resolved: layout.Layout, stage: dict[str, Any]):
    """The hyper-parameters a planned training stage runs with (stage 2 lays out as `train`)."""
    return {"reward_model": resolved.reward, "dpo": resolved.dpo}.get(stage["stage"], resolved.train)


#: the column of throughput.csv that counts a stage kind's tokens (`throughput.py`)
MEASURED_TOKENS = {"sft": "trained_tokens", "reward_model": "trained_tokens",
                   "generate": "generated_tokens", "reward_scores": "prompt_tokens",
                   "label_confidence": "prompt_tokens"}


@functools.cache
def measured_rates(path: str | None) -> dict[tuple[str, str], tuple[float, float]]:
    """(stage, rung) -> (tokens per device-second, tokens per row) of a previous run's
    throughput.csv (`sweep.measured_throughput`); {} without one."""
    if not path:
        return {}
    import pandas as pd

    folder, name = path.rstrip("/").rsplit("/", 1)
    store = Store(folder)
    with store.fs.open_input_stream(store.path(name)) as f:
        frame = pd.read_csv(f)
    out = {}
    for row in frame.to_dict("records"):
        count = row.get(MEASURED_TOKENS.get(row["stage"], ""))
        if count and row.get("tokens_per_device_s") and row.get("samples"):
            out[(row["stage"], row["rung"])] = (row["tokens_per_device_s"], count / row["samples"])
    return out


def steps_of(n: int, hp) -> tuple[int, int]:
    """(steps, steps per epoch) of a training stage over `n` rows (an upper bound, as `n` is:
    the loop's batches never mix capabilities, which can add one per capability)."""
    per_epoch = max(1, math.ceil(n / hp.batch_size))
    return max(1, math.ceil(hp.epochs * per_epoch)), per_epoch


def checkpoints(config: SweepConfig, stage: dict[str, Any]) -> str:
    """A training stage's resumable checkpoints: how many, and the size of each."""
    rung = stage.get("rung")
    resolved = layout.resolve(config, rung) if rung else None
    if stage["stage"] not in ("sft", "reward_model") or resolved is None:
        return "-"
    hp = training_recipe(resolved, stage)
    made = checkpointing.count(hp, *steps_of(rows(config, stage)[0], hp))
    if resolved.arch is None or not made:
        return str(made)
    return f"{made}x{checkpointing.BYTES_PER_PARAM * resolved.arch.params / 1e9:.0f}GB"


def cost(config: SweepConfig, stage: dict[str, Any],
         hw: hardware.Figures = hardware.DEFAULT) -> tuple[str, float]:
    """(resource request, GPU-hours) of one planned stage: at the rates a previous run measured
    for its stage kind and rung (`sweep.measured_throughput`), else at the assumed ones (the GPU
    peak from the preflight where it ran, `hardware.py`)."""
    rung = stage.get("rung")
    resolved = layout.resolve(config, rung) if rung else None
    arch = resolved.arch if resolved else None
    if stage["stage"] == "fetch" and arch is not None:
        return f"download {2 * arch.params / 1e9:.0f} GB (bf16)", 0.0
    if stage["stage"] not in GPU_STAGES or arch is None:
        return "CPU", 0.0
    n, new_tokens = rows(config, stage)
    measured = measured_rates(config.sweep.measured_throughput).get((stage["stage"], rung))
    if stage["stage"] in TRAINING:
        hp = training_recipe(resolved, stage)
        sequences = 2 if stage["stage"] == "dpo" else 1
        flops = n * sequences * hp.epochs * TRAIN_TOKENS * TRAIN_FLOPS[stage.get("loss")] * arch.params
        t = resources.layout_of(hp)
        request = (f"{t.workers} GPU {t.strategy} mb{t.micro_batch}x{t.grad_accum}"
                   f"{' ac' if t.activation_checkpointing else ''}" if hp.plan else
                   f"{hp.num_workers} x (CPU {hp.cpus_per_worker}"
                   f"{', GPU 1' if hp.use_gpu else ''}) {hp.strategy}")
        request += f" loss {stage['loss']}" if stage.get("loss") else ""
        if measured:
            return request, n * hp.epochs * measured[1] / measured[0] / 3600
        return request, flops / (hw["tflops"] * 1e12 * MFU) / 3600
    tp = resolved.inference.tensor_parallel_size
    if stage["stage"] in ("reward_scores", "label_confidence"):
        what = "pooling" if stage["stage"] == "reward_scores" else "prompt log-probs"
        if measured:
            return f"{tp} GPU vLLM tp{tp} ({what})", n * measured[1] / measured[0] / 3600
        return f"{tp} GPU vLLM tp{tp} ({what})", n * TRAIN_TOKENS * 2 * arch.params / (hw["tflops"] * 1e12 * MFU) / 3600
    if stage["stage"] == "logprobs":
        return f"{tp} GPU transformers", n * TRAIN_TOKENS * 2 * arch.params / (hw["tflops"] * 1e12 * MFU) / 3600
    if measured:
        return f"{tp} GPU vLLM tp{tp}", n * measured[1] / measured[0] / 3600
    return f"{tp} GPU vLLM tp{tp}", new_tokens / vllm_tokens_per_gpu_s(arch.params) / 3600


def vllm_tokens_per_gpu_s(params: float) -> float:
    """VLLM_TOKENS_PER_GPU_S at `params`: linear in log-log between its two nearest points."""
    points = sorted(VLLM_TOKENS_PER_GPU_S.items())
    pairs = list(itertools.pairwise(points))
    (p0, t0), (p1, t1) = next((pair for pair in pairs if params <= pair[1][0]), pairs[-1])
    slope = math.log(t1 / t0) / math.log(p1 / p0)
    return t0 * (params / p0) ** slope


def engine_starts(config: SweepConfig, stages: list[dict[str, Any]],
                  hw: hardware.Figures = hardware.DEFAULT) -> str:
    """Engine starts and their GPU-hours: one per inference stage, and one per model (hosts)."""
    per_stage: list[tuple[str, str]] = []
    for s in stages:
        if s["stage"] in INFERENCE_STAGES and s.get("rung"):
            model = next(i for i in s["inputs"] if i.startswith(MODEL_INPUTS))
            per_stage.append((model, s["rung"]))

    def hours(starts) -> float:
        total = 0.0
        for _, rung in starts:
            resolved = layout.resolve(config, rung)
            if resolved.arch is None:
                continue
            gpus = resolved.inference.tensor_parallel_size
            seconds = 2 * resolved.arch.params / 1e9 / hw["load_gb_per_s"] + ENGINE_WARMUP_S
            total += gpus * seconds / 3600
        return total

    per_model = set(per_stage)
    return (f"engine starts: one per inference stage {len(per_stage)} ({hours(per_stage):.1f} GPU-h); "
            f"engine hosts, one per model {len(per_model)} ({hours(per_model):.1f} GPU-h)")


def checkpoint_totals(config: SweepConfig, stages: list[dict[str, Any]],
                      hw: hardware.Figures = hardware.DEFAULT) -> str:
    """Training checkpoints of the grid (as many as `checkpoints` lists per stage): count, size,
    and the GPU-hours their gangs wait while each is staged and uploaded."""
    saves = size = hours = 0.0
    for s in stages:
        resolved = layout.resolve(config, s["rung"]) if s["stage"] in ("sft", "reward_model") and s.get("rung") else None
        if resolved is None or resolved.arch is None:
            continue
        hp = training_recipe(resolved, s)
        made = checkpointing.count(hp, *steps_of(rows(config, s)[0], hp))
        gpus = resources.layout_of(hp).workers if hp.plan else hp.num_workers
        each = checkpointing.BYTES_PER_PARAM * resolved.arch.params / 1e9
        per_node = each / max(1, math.ceil(gpus / GPUS_PER_NODE))
        seconds = per_node / hw["disk_write_gb_per_s"] + per_node / hw["store_write_gb_per_s"]
        saves += made
        size += made * each / 1e3
        hours += made * gpus * seconds / 3600
    return (f"training checkpoints: {saves:.0f} saves, {size:.1f} TB, staged and uploaded while their "
            f"gangs wait: {hours:.1f} GPU-h")


def measured_line(config: SweepConfig) -> str:
    rates = measured_rates(config.sweep.measured_throughput)
    if not config.sweep.measured_throughput:
        return "throughput: assumed (sweep.measured_throughput names a previous run's throughput.csv)"
    kinds = ", ".join(f"{stage} {rung}" for stage, rung in sorted(rates)) or "none"
    return (f"throughput: measured in {config.sweep.measured_throughput} for {kinds}; "
            "the other stages assumed")


def dry_run(config: SweepConfig) -> str:
    """The report `--dry-run` prints."""
    config = fetch.pin_revisions(config, fetch.planned_revision)
    store = Store(config.storage)
    hw = hardware.figures(store)
    stages = plan_stages(config)
    header = f"{'stage':<18}{'tag':<18}{'rung':<6}{'status':<10}{'request':<36}{'GPU-h':>8}{'GB/GPU':>8}"
    lines = [header + f"{'ckpts':>10}"]
    total = done_h = 0.0
    n_done = 0
    for s in stages:
        request, hours = cost(config, s, hw)
        committed = store.committed(Artifact(s["stage"], s["key"]))
        total += hours
        done_h += hours if committed else 0.0
        n_done += committed
        memory = stage_memory_gb(config, s)
        over = memory is not None and memory > resources.FIT_GB
        estimate = "-" if memory is None else f"{memory:.1f}"
        lines.append(f"{s['stage']:<18}{s.get('tag', '')!s:<18}{s.get('rung') or '-'!s:<6}"
                     f"{'committed' if committed else 'todo':<10}{request:<36}{hours:>8.1f}{estimate:>8}"
                     f"{checkpoints(config, s):>10}"
                     + (f" OVER MEMORY (> {resources.FIT_GB:.0f})" if over else ""))
    naive_stages = plan_stages(config, naive=True)
    naive = sum(cost(config, s, hw)[1] for s in naive_stages)
    lines += ["",
              f"unique stages: {len(stages)} (naive grid: {len(naive_stages)}); committed: {n_done}",
              f"GPU-hours, deduplicated grid: {total:.1f} (of which committed: {done_h:.1f}; left: {total - done_h:.1f})",
              f"GPU-hours, naive grid (every stage rerun per pair x seed x method): {naive:.1f}",
              f"naive / deduplicated: {naive / total:.2f}x" if total else "no GPU stage in this grid",
              engine_starts(config, stages, hw),
              checkpoint_totals(config, stages, hw),
              measured_line(config),
              ("ckpts: resumable checkpoints a training stage writes x the size of each (weights and "
               "AdamW in fp32); none below train.checkpoint_min_steps steps, where a failure restarts the stage"),
              *[f"hub revision of {r.name}: {r.model}@{r.revision}"
                + (" (neither the hub nor this machine's cache answered; the run pins it at its start)"
                   if r.revision == fetch.UNPINNED else "")
                for r in config.ladder.rungs if rungs.kind(r) == "hub"],
              *[f"hardware figures {line}" for line in hw.describe()],
              (f"model: training 6 x params x tokens (8 with loss logconf) at {hw['tflops']:.0f} TFLOP/s "
               f"x MFU {MFU} (assumed: only a training run measures it), "
              f"{TRAIN_TOKENS} tokens per row; vLLM tokens/s per GPU by parameters "
              f"{ {f'{p / 1e9:g}B': t for p, t in VLLM_TOKENS_PER_GPU_S.items()} } (log-log between them)")]
    return "\n".join(lines)
