"""Per-model-size resource plans for A100 80 GB nodes, with the memory estimate behind each row.

A plan says, for one Qwen-1.5 size, how its fine-tuning runs (GPU workers, DDP or FSDP full
shard, bf16 mixed precision, activation checkpointing, per-device micro-batch and gradient
accumulation with workers x micro x accumulation = the paper's global batch of 40, exactly) and
how vLLM serves it (tensor parallel size; concurrent sequences the KV cache holds).

Parameter counts come from the architectures below (the published configs), never from a hub
lookup: `--dry-run` needs them offline. Memory per GPU (bytes), following Rajbhandari et al.
2020 (ZeRO) for states and Korthikanti et al. 2022 for activations:
  states       16 x P / shards   fp32 master weights 4 + fp32 grads 4 + Adam m, v 8
  gathered     2 x 2 x layer     FSDP: one bf16 layer unsharded, one prefetched
  activations  34 x s x b x h x L  without checkpointing (flash attention: no s^2 term);
               2 x s x b x h x L + 34 x s x b x h  with it (layer inputs kept, one layer recomputed)
  logits       10 x s x b x V    bf16 logits, their fp32 copy for the loss, its gradient
  overhead     3 GB              CUDA context, NCCL buffers, allocator slack
A row fits when the sum stays under FIT_GB (90% of 80 GB). The global batch 40 = 2^3 x 5 only
splits over 1, 2, 4, 5, 8, 10, 20 or 40 workers, so 72B shards over 20 GPUs (3 nodes), not 16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from w2s_ray.config import InferenceSpec, RungSpec, TrainHParams

GPU_GB = 80.0
FIT_GB = 0.9 * GPU_GB
OVERHEAD_GB = 3.0
GLOBAL_BATCH = 40
SEQ = 1024  # the scale presets' train.max_length: prompt + answer tokens per row
VLLM_MEMORY_FRACTION = 0.9  # vLLM's default gpu_memory_utilization
VLLM_MAX_SEQS = 256  # vLLM's default max_num_seqs


@dataclass(frozen=True)
class Arch:
    """The dimensions that set parameter count and memory (Qwen-1.5 configs on the hub)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int

    @property
    def layer_params(self) -> int:
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        return attention + 3 * self.hidden * self.ffn  # SwiGLU: gate, up, down

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + 2 * self.vocab * self.hidden  # untied embeddings

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * (self.hidden // self.heads) * 2  # K and V, bf16


# Published counts, which these reproduce: 0.62B, 1.84B, 3.95B, 7.72B, 14.2B, 32.5B, 72.3B.
ARCHS: dict[str, Arch] = {
    "0.5b": Arch(24, 1024, 16, 16, 2816, 151936),
    "1.8b": Arch(24, 2048, 16, 16, 5504, 151936),
    "4b": Arch(40, 2560, 20, 20, 6912, 151936),
    "7b": Arch(32, 4096, 32, 32, 11008, 151936),
    "14b": Arch(40, 5120, 40, 40, 13696, 152064),
    "32b": Arch(64, 5120, 40, 8, 27392, 152064),
    "72b": Arch(80, 8192, 64, 64, 24576, 152064),
}


@dataclass(frozen=True)
class TrainPlan:
    workers: int  # one GPU each
    strategy: Literal["ddp", "fsdp"]
    micro_batch: int
    grad_accum: int
    activation_checkpointing: bool


@dataclass(frozen=True)
class InferPlan:
    tensor_parallel: int


@dataclass(frozen=True)
class Plan:
    train: TrainPlan
    infer: InferPlan


PLANS: dict[str, Plan] = {
    # Up to 1.8B all states fit one GPU: plain data parallel on one worker, big micro-batches.
    "0.5b": Plan(TrainPlan(1, "ddp", 10, 4, False), InferPlan(1)),
    "1.8b": Plan(TrainPlan(1, "ddp", 8, 5, False), InferPlan(1)),
    # 4B's 63 GB of states leave no room for activations on one GPU: shard them over two.
    "4b": Plan(TrainPlan(2, "fsdp", 4, 5, False), InferPlan(1)),
    # From 7B on: FSDP, activation checkpointing, the logits bounding the micro-batch.
    "7b": Plan(TrainPlan(4, "fsdp", 5, 2, True), InferPlan(1)),
    "14b": Plan(TrainPlan(8, "fsdp", 5, 1, True), InferPlan(1)),
    # 32B on 8 GPUs would need 72.3 GB (over FIT_GB); 10 divides 40, 16 does not.
    "32b": Plan(TrainPlan(10, "fsdp", 1, 4, True), InferPlan(2)),
    # 72B: 1.16 TB of states over 20 GPUs (3 nodes); vLLM needs 145 GB of bf16 weights: TP 4.
    "72b": Plan(TrainPlan(20, "fsdp", 1, 2, True), InferPlan(4)),
}


def train_memory_gb(arch: Arch, plan: TrainPlan, seq: int = SEQ, bf16: bool = True) -> dict[str, float]:
    """Estimated peak memory per GPU of one training worker, by part, in GB. Without bf16 mixed
    precision, activations and logits are fp32: twice the activations, 12 bytes per logit."""
    shards = plan.workers if plan.strategy == "fsdp" else 1
    b, h, layers = plan.micro_batch, arch.hidden, arch.layers
    if plan.activation_checkpointing:
        activations = 2 * seq * b * h * layers + 34 * seq * b * h
    else:
        activations = 34 * seq * b * h * layers
    parts = {
        "states": 16 * arch.params / shards,
        "gathered": (4 if bf16 else 8) * arch.layer_params if plan.strategy == "fsdp" else 0,
        "activations": activations * (1 if bf16 else 2),
        "logits": (10 if bf16 else 12) * seq * b * arch.vocab,
    }
    out = {k: v / 1e9 for k, v in parts.items()}
    out["overhead"] = OVERHEAD_GB
    out["total"] = sum(out.values())
    return out


def layout_of(hp: TrainHParams) -> TrainPlan:
    """The layout a training stage runs with under `hp`, whether or not a plan set it."""
    workers = max(1, hp.num_workers)
    return TrainPlan(workers, hp.strategy, -(-hp.batch_size // (workers * hp.grad_accum)), hp.grad_accum,
                     hp.activation_checkpointing)


def infer_memory_gb(arch: Arch, plan: InferPlan, seq: int = SEQ, dtype_bytes: int = 2) -> dict[str, float]:
    """vLLM per GPU: weights / TP, and how many `seq`-token sequences the KV cache holds."""
    weights = dtype_bytes * arch.params / plan.tensor_parallel / 1e9
    kv_gb = VLLM_MEMORY_FRACTION * GPU_GB - weights - OVERHEAD_GB
    per_seq = arch.kv_bytes_per_token() / plan.tensor_parallel * seq / 1e9
    return {"weights": weights, "kv_cache": kv_gb,
            "max_num_seqs": float(min(VLLM_MAX_SEQS, int(kv_gb / per_seq)))}


def size_of(rung: RungSpec) -> str | None:
    """The plan row of a rung: its name or hub id names the size (`7b`, `Qwen/Qwen1.5-7B`)."""
    for text in (rung.name, rung.model.rsplit("/", 1)[-1]):
        found = re.search(r"(\d+(?:\.\d+)?)[bB]\b", text)
        if found and f"{found.group(1)}b" in PLANS:
            return f"{found.group(1)}b"
    return None


def inference_spec(inf: InferenceSpec, size: str) -> InferenceSpec:
    """`inf` with the plan's vLLM layout for `size`: tensor parallel, one GPU per TP rank, and as
    many concurrent sequences as the KV cache left beside the weights holds."""
    plan = PLANS[size].infer
    seqs = int(infer_memory_gb(ARCHS[size], plan)["max_num_seqs"])
    return inf.model_copy(update={"tensor_parallel_size": plan.tensor_parallel,
                                  "gpus_per_actor": float(plan.tensor_parallel), "concurrency": seqs})


def training_hparams(hp: TrainHParams, size: str) -> TrainHParams:
    """`hp` with the plan's layout for `size`; the optimisation recipe (lr, epochs...) is kept."""
    plan = PLANS[size].train
    if plan.workers * plan.micro_batch * plan.grad_accum != hp.batch_size:
        raise ValueError(f"resource plan {size}: {plan.workers} workers x {plan.micro_batch} x "
                         f"{plan.grad_accum} != train.batch_size {hp.batch_size}")
    return hp.model_copy(update={
        "num_workers": plan.workers, "use_gpu": True, "strategy": plan.strategy,
        "grad_accum": plan.grad_accum, "activation_checkpointing": plan.activation_checkpointing,
        "mixed_precision": "bf16"})
