"""Resource plans for A100 80 GB nodes, from a model's architecture, with the memory estimate
behind each.

A plan says how a model's fine-tuning runs (GPU workers, DDP or FSDP full shard, bf16 mixed
precision, activation checkpointing, per-device micro-batch and gradient accumulation with
workers x micro x accumulation = train.batch_size, exactly) and how vLLM serves it (tensor
parallel size; concurrent sequences the KV cache holds). `train_plan` and `infer_plan` search the
layouts for the cheapest one whose estimate fits; the architecture they size comes from the
model's config.json (`arch_of`; where the file is found: `rungs.config`), never from its name.

Memory per GPU: the larger of a step's two peaks (`train_memory_gb`), with P parameters, s x b
tokens per micro-batch, h hidden, f ffn, V vocab:
  backward's start  weights 4 P + AdamW moments 8 P + gradients (4 P once a step accumulates,
                    else the head's 4 V h) + saved activations + logits (+ 2 P autocast copies)
  optimizer step    weights 4 P + gradients 4 P + moments 8 P + the head's two temporaries
  activations       (44 h + 16 f) bytes per layer and token in fp32, 0.66 of it in bf16; with
                    activation checkpointing 4 h per layer-token plus one layer recomputed
  logits            12 bytes per vocabulary entry and token (fp32 log-probs, their gradient and
                    the logits' gradient; flash attention: no s^2 term)
  gathered          FSDP: one layer unsharded, one prefetched; and the output head, its own unit
                    (`runtime/parallel.py`), gathered for the logits with its unsharded gradient
                    in the parameters' dtype in backward
  reduce buffers    FSDP: the head's gradient copied whole into the fp32 reduce-scatter input,
                    and the shard that comes out beside the one accumulated (measured on gloo)
  DDP buckets       4 P over several DDP workers: the fp32 gradient buckets it all-reduces
  overhead          3 GB: CUDA context, NCCL buffers, allocator slack
Everything per parameter is divided by the FSDP group's size: under FSDP a step's accumulated
gradients stay sharded (every micro-batch reduce-scatters). The per-parameter and per-token
terms are measured: benchmarks/memory.py trains random-init Qwen2 models on a CPU and compares
peak memory with this estimate (docs/memory.md). The GPU-only terms (overhead, DDP buckets,
FSDP's sharding and its bf16 parameters, whose activations are taken as autocast's) are stated
assumptions. The activation terms are Qwen2's decoder layer (RMSNorm, SwiGLU), which Llama,
Mistral and Qwen2.5 share; other layer shapes get the same estimate, unmeasured.
A layout fits when the sum stays at or under FIT_GB (90% of 80 GB).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from w2s_ray.config import InferenceSpec, TrainHParams
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
    """The dimensions that set parameter count and memory: a config.json's (`arch_of`)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    tied: bool = False  # one vocab x hidden matrix for the input embeddings and the output head
    head_dim: int | None = None  # None: hidden / heads (configs that set it may differ, Qwen3)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        q_and_o = 2 * self.hidden * self.heads * self.head_size
        k_and_v = 2 * self.hidden * self.kv_heads * self.head_size  # grouped-query: fewer KV heads
        return q_and_o + k_and_v + 3 * self.hidden * self.ffn  # SwiGLU: gate, up, down

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + (1 if self.tied else 2) * self.vocab * self.hidden

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_size * 2  # K and V, bf16


#: config.json keys that count a mixture of experts' experts: their parameters and routing are
#: outside what `Arch` and the estimate describe, so such a model gets no plan
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


DECODER_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def arch_of(config: dict[str, Any]) -> Arch | None:
    """The Arch a Hugging Face config.json describes, or None for one the estimate cannot size
    (without DECODER_KEYS, or a mixture of experts). Where a field is missing, the value that
    needs more memory: no `num_key_value_heads` is one KV head per head, no `tie_word_embeddings`
    an untied head (Llama's and Qwen2's default, though not every class's); no
    `intermediate_size` is 4 x hidden, the classic MLP's width."""
    if any(config.get(key) is None for key in DECODER_KEYS):
        return None
    if any((config.get(key) or 0) > 1 for key in EXPERT_KEYS):
        return None
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    return Arch(layers=config["num_hidden_layers"], hidden=hidden, heads=heads,
                kv_heads=config.get("num_key_value_heads") or heads,
                ffn=config.get("intermediate_size") or 4 * hidden, vocab=config["vocab_size"],
                tied=bool(config.get("tie_word_embeddings", False)), head_dim=config.get("head_dim"))


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
        "head_gathered": head_gathered(arch, bf16) if plan.strategy == "fsdp" and shards > 1 else 0,
        "reduce_buffers": reduce_buffers(arch, shards) if plan.strategy == "fsdp" and shards > 1 else 0,
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
    # head's: the second moment's square root and its quotient by the bias correction, two of
    # them (measured); torch's default on CUDA, foreach, would hold copies of every parameter.
    step = {"weights": resident["weights"], "adam": resident["adam"], "grads": GRAD_B * params,
            "ddp_buckets": resident["ddp_buckets"], "step_temporaries": 2 * head_grad}
    peak = max(backward, step, key=lambda parts: sum(parts.values()))
    out = {k: v / 1e9 for k, v in peak.items()}
    out["overhead"] = OVERHEAD_GB if device == "gpu" else CPU_OVERHEAD_GB
    out["total"] = sum(out.values())
    return out


def head_gathered(arch: Arch, bf16: bool) -> float:
    """Bytes of the output head's FSDP unit while backward passes it: its gathered weights and its
    unsharded gradient, both in the parameters' dtype."""
    return arch.vocab * arch.hidden * (2 + 2 if bf16 else 4 + 4)


def reduce_buffers(arch: Arch, shards: int) -> float:
    """Bytes FSDP2 holds to reduce-scatter the output head's gradient (`foreach_reduce`): the whole
    gradient copied into the input buffer in the reduce dtype (fp32, under either precision), and
    the output shard, which exists beside the gradient it is added to until the addition. Measured
    as peak memory on 2 gloo ranks at 0.5B's widths (benchmarks/memory.py); the NCCL buffers a GPU
    adds are in the overhead."""
    head = arch.vocab * arch.hidden
    return GRAD_B * head * (1 + 1 / shards)


def training_estimate_gb(arch: Arch | None, hp: TrainHParams, sequences: int = 1) -> float | None:
    """A training stage's estimated peak per GPU under `hp`'s layout; None off the GPU or for an
    architecture the estimate cannot size. The one figure the dry run prints, the CLI refuses
    over, and an out-of-memory error quotes. `sequences` per row: DPO's 2 (chosen and rejected
    in one forward; its reference terms are precomputed, so no second model is held)."""
    if arch is None or not hp.use_gpu:
        return None
    plan = layout_of(hp)
    plan = TrainPlan(plan.workers, plan.strategy, plan.micro_batch * sequences, plan.grad_accum,
                     plan.activation_checkpointing)
    return train_memory_gb(arch, plan, hp.max_length, bf16=hp.mixed_precision == "bf16")["total"]


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


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@cache
def train_plan(arch: Arch, batch_size: int = GLOBAL_BATCH, seq: int = SEQ, sequences: int = 1) -> TrainPlan:
    """The cheapest bf16 layout of `arch`'s fine-tuning whose estimate fits FIT_GB: the fewest
    GPUs, then no activation checkpointing (it recomputes every layer's forward), then the
    largest micro-batch. One GPU trains unsharded; several shard with FSDP, since DDP would
    replicate on each the states that did not fit one. Workers and micro-batches divide
    `batch_size`, so the global batch stays exact. Where none fits, the most sharded layout,
    which the dry run and the sweep's check then report as over the limit. A row of `sequences`
    sequences (DPO: 2) weighs that many in the estimate; micro-batches count rows."""
    layouts = [TrainPlan(workers, "ddp" if workers == 1 else "fsdp", micro, batch_size // workers // micro, ckpt)
               for workers in divisors(batch_size) for ckpt in (False, True)
               for micro in reversed(divisors(batch_size // workers))]

    def fits(t: TrainPlan) -> bool:
        held = TrainPlan(t.workers, t.strategy, t.micro_batch * sequences, t.grad_accum, t.activation_checkpointing)
        return train_memory_gb(arch, held, seq)["total"] <= FIT_GB

    return next((t for t in layouts if fits(t)), layouts[-1])


MIN_INFER_SEQS = 32  # concurrent 1024-token sequences below which an engine decodes too few at once
TENSOR_PARALLEL = (1, 2, 4, 8)  # within one 8-GPU node


@cache
def infer_plan(arch: Arch) -> InferPlan:
    """The smallest tensor parallel size that vLLM can split `arch` by (attention heads, the
    ffn, and KV heads either split or replicated) whose KV cache, beside the weights, holds
    MIN_INFER_SEQS sequences; else the largest, which the dry run reports if it still fits none."""
    sizes = [tp for tp in TENSOR_PARALLEL if arch.heads % tp == 0 and arch.ffn % tp == 0
             and (arch.kv_heads % tp == 0 or tp % arch.kv_heads == 0)]
    return next((InferPlan(tp) for tp in sizes
                 if infer_memory_gb(arch, InferPlan(tp))["max_num_seqs"] >= MIN_INFER_SEQS), InferPlan(sizes[-1]))


def plan_for(arch: Arch, batch_size: int = GLOBAL_BATCH, seq: int = SEQ) -> Plan:
    return Plan(train_plan(arch, batch_size, seq), infer_plan(arch))


#: The Qwen-1.5 sizes from the configs the project carries, and the plans they get at the
#: paper's batch and the scale presets' length: the shapes the benchmarks measure and
#: docs/memory.md tabulates. Their counts match the published 0.62B ... 72.3B.
ARCHS: dict[str, Arch] = {size.lower(): arch_of(rungs.carried_config(f"Qwen/Qwen1.5-{size}"))
                          for size in ("0.5B", "1.8B", "4B", "7B", "14B", "32B", "72B")}
PLANS: dict[str, Plan] = {size: plan_for(arch) for size, arch in ARCHS.items()}


def inference_spec(inf: InferenceSpec, arch: Arch) -> InferenceSpec:
    """`inf` with `arch`'s vLLM layout: tensor parallel, one GPU per TP rank, and as many
    concurrent sequences as the KV cache left beside the weights holds."""
    plan = infer_plan(arch)
    seqs = int(infer_memory_gb(arch, plan)["max_num_seqs"])
    return inf.model_copy(update={"tensor_parallel_size": plan.tensor_parallel,
                                  "gpus_per_actor": float(plan.tensor_parallel), "concurrency": seqs})


def training_hparams(hp: TrainHParams, arch: Arch, sequences: int = 1) -> TrainHParams:
    """`hp` with `arch`'s layout for its global batch and length; the optimisation recipe (lr,
    epochs...) is kept; a row of `sequences` sequences (DPO: 2) weighs that many in the plan."""
    plan = train_plan(arch, hp.batch_size, hp.max_length, sequences)
    return hp.model_copy(update={
        "num_workers": plan.workers, "use_gpu": True, "strategy": plan.strategy,
        "grad_accum": plan.grad_accum, "activation_checkpointing": plan.activation_checkpointing,
        "mixed_precision": "bf16"})
