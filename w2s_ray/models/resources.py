"""Per-model-size resource plans for A100 80 GB nodes, with the memory estimate behind each row.

A plan says, for one Qwen-1.5 size, how its fine-tuning runs (GPU workers, DDP or FSDP full
shard, bf16 mixed precision, activation checkpointing, per-device micro-batch and gradient
accumulation with workers x micro x accumulation = the paper's global batch of 40, exactly) and
how vLLM serves it (tensor parallel size; concurrent sequences the KV cache holds).

Parameter counts come from the architectures below (the published configs), never from a hub
lookup: `--dry-run` needs them offline. Memory per GPU: the larger of a step's two peaks
(`train_memory_gb`), with P parameters, s x b tokens per micro-batch, h hidden, f ffn, V vocab:
  backward's start  weights 4 P + AdamW moments 8 P + gradients (4 P once a step accumulates,
                    else the head's 4 V h) + saved activations + logits (+ 2 P autocast copies)
  optimizer step    weights 4 P + gradients 4 P + moments 8 P + one tensor's temporaries
  activations       (44 h + 16 f) bytes per layer and token in fp32, 0.66 of it in bf16; with
                    activation checkpointing 4 h per layer-token plus one layer recomputed
  logits            12 bytes per vocabulary entry and token (fp32 log-probs, their gradient and
                    the logits' gradient; flash attention: no s^2 term)
  gathered          FSDP: one layer unsharded, one prefetched
  DDP buckets       4 P over several DDP workers: the fp32 gradient buckets it all-reduces
  overhead          3 GB: CUDA context, NCCL buffers, allocator slack
Everything per parameter is divided by the FSDP group's size. The per-parameter and per-token
terms are measured: benchmarks/memory.py trains random-init Qwen2 models on a CPU and compares
peak memory with this estimate (docs/memory.md). The GPU-only terms (overhead, DDP buckets,
FSDP's sharding and its bf16 parameters, whose activations are taken as autocast's) are stated
assumptions.
A row fits when the sum stays under FIT_GB (90% of 80 GB). The global batch 40 = 2^3 x 5 only
splits over 1, 2, 4, 5, 8, 10, 20 or 40 workers, so 72B shards over 20 GPUs (3 nodes), not 16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from w2s_ray.config import InferenceSpec, RungSpec, TrainHParams
from w2s_ray.models import rungs

GPU_GB = 80.0
FIT_GB = 0.9 * GPU_GB
OVERHEAD_GB = 3.0  # GPU only, not measured here: CUDA context 1-2 GB, NCCL buffers, allocator slack
CPU_OVERHEAD_GB = 0.03  # a CPU process's first training step above its imports (benchmarks/memory.py)
# Bytes per parameter: fp32 master weights, fp32 gradients, AdamW's two fp32 moments (ZeRO's 16),
# and under autocast the bf16 copy of each weight that autocast caches until backward ends.
WEIGHT_B, GRAD_B, ADAM_B, AUTOCAST_COPY_B = 4, 4, 8, 2
# Tensors Hugging Face's Qwen2 saves for backward per decoder layer and token, in fp32 (counted
# with saved-tensor hooks, checked against peak memory by benchmarks/memory.py): two RMSNorms'
# input and output (4 x hidden), the q/k/v input, q and k after RoPE, v, the attention output
# and o_proj's input (6 x hidden, +1 for the norms' scale), SwiGLU's gate, activation, up and
# product (4 x ffn). Under autocast the matmul outputs are bf16 and the norms and the residual
# stream stay fp32: 0.66 of that, not half.
ACT_HIDDEN_B, ACT_FFN_B = 44, 16
BF16_ACT_RATIO = 0.66
CKPT_HIDDEN_B = 4  # with activation checkpointing each layer keeps only its fp32 input
# Per vocabulary entry and token, while backward starts: fp32 log-probabilities, their gradient
# and the logits' gradient.
LOGIT_B = 12
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
    # 1.8B: micro-batch 8 would need 74 GB (activations 23, logits 15): 5 x 8 needs 60.
    "1.8b": Plan(TrainPlan(1, "ddp", 5, 8, False), InferPlan(1)),
    # 4B's 63 GB of states leave no room for activations on one GPU: shard them over two.
    "4b": Plan(TrainPlan(2, "fsdp", 4, 5, False), InferPlan(1)),
    # From 7B on: FSDP, activation checkpointing, the logits bounding the micro-batch.
    "7b": Plan(TrainPlan(4, "fsdp", 5, 2, True), InferPlan(1)),
    "14b": Plan(TrainPlan(8, "fsdp", 5, 1, True), InferPlan(1)),
    # 32B on 8 GPUs would need 73.6 GB (over FIT_GB); 10 divides 40, 16 does not.
    "32b": Plan(TrainPlan(10, "fsdp", 1, 4, True), InferPlan(2)),
    # 72B: 1.16 TB of states over 20 GPUs (3 nodes); vLLM needs 145 GB of bf16 weights: TP 4.
    "72b": Plan(TrainPlan(20, "fsdp", 1, 2, True), InferPlan(4)),
}


def train_memory_gb(arch: Arch, plan: TrainPlan, seq: int = SEQ, bf16: bool = True,
                    device: Literal["gpu", "cpu"] = "gpu") -> dict[str, float]:
    """Estimated peak memory of one training worker (per GPU, or of a CPU process above its
    imports), by part, in GB: the larger of two moments of a step (module docstring).
    Backward's start holds the weights, AdamW's moments, the gradients already there (all of them
    from the second micro-batch of an accumulated step on; else only the output head's, the first
    one backward writes), every saved activation and the loss's fp32 logits; the optimizer step
    holds weights, gradients, moments and the step's temporaries. bf16 is autocast (a cached bf16
    copy of every weight; matmul outputs in bf16, norms and residuals in fp32) or FSDP's bf16
    parameters, whose activations are taken to be no larger than autocast's."""
    shards = plan.workers if plan.strategy == "fsdp" else 1
    b, h, layers = plan.micro_batch, arch.hidden, arch.layers
    tokens = seq * b
    layer = (ACT_HIDDEN_B * h + ACT_FFN_B * arch.ffn) * (BF16_ACT_RATIO if bf16 else 1.0)
    if plan.activation_checkpointing:
        activations = tokens * (CKPT_HIDDEN_B * h * layers + layer)
    else:
        activations = tokens * layer * layers
    params = arch.params / shards
    resident = {
        "weights": WEIGHT_B * params,
        "adam": ADAM_B * params,
        "gathered": (2 if bf16 else 4) * 2 * arch.layer_params if plan.strategy == "fsdp" else 0,
        "autocast_copy": AUTOCAST_COPY_B * params if bf16 and plan.strategy == "ddp" else 0,
        # DDP over several workers all-reduces from its own fp32 gradient buckets (GPU, assumed).
        "ddp_buckets": GRAD_B * params if plan.strategy == "ddp" and plan.workers > 1 else 0,
    }
    head_grad = GRAD_B * arch.vocab * h / shards
    backward = {
        **resident,
        "grads": GRAD_B * params if plan.grad_accum > 1 else head_grad,
        "activations": activations,
        "logits": LOGIT_B * tokens * arch.vocab,
    }
    # The loop AdamW (runtime/trainer.py) holds one tensor's temporaries at a time, the largest the
    # head; torch's default on CUDA, foreach, would hold a copy of every parameter.
    step = {"weights": resident["weights"], "adam": resident["adam"], "grads": GRAD_B * params,
            "ddp_buckets": resident["ddp_buckets"], "step_temporaries": head_grad}
    peak = max(backward, step, key=lambda parts: sum(parts.values()))
    out = {k: v / 1e9 for k, v in peak.items()}
    out["overhead"] = OVERHEAD_GB if device == "gpu" else CPU_OVERHEAD_GB
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
    """The plan row of a rung: its name or hub id names the size (`7b`, `Qwen/Qwen1.5-7B`); a
    tiny rung has none."""
    if rungs.kind(rung) == "tiny":
        return None
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
