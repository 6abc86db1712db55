"""The training memory estimate (w2s_ray/models/resources.py) against measured peak memory.

    python benchmarks/memory.py [--quick] [--threads N]

Each configuration trains a random-init Qwen2 (built in-process from a `Qwen2Config`, nothing
downloaded) for two steps of the project's own optimisation loop (`runtime.trainer.optimize`:
AdamW, the causal-LM loss on answer tokens, bf16 autocast and activation checkpointing as a
single worker applies them through `stages.parallel`), in a fresh subprocess. Measured: the
process's peak resident memory (VmHWM, reset after the imports) minus its resident memory then, so the
interpreter, torch and transformers are left out and the weights, gradients, AdamW states,
activations and logits are in. The subprocess runs with glibc's mmap threshold at 64 KiB: every
tensor is then mapped on allocation and unmapped on free, so resident memory follows the live
tensors, which is what the estimate counts. With glibc's defaults, freed tensors stay in its
heap between layers and the peak is 1.3-1.6x higher (docs/memory.md): that slack is the CPU
allocator's, not the model's (a GPU's caching allocator has its own: the overhead assumption).
Two steps, because AdamW allocates its states in the first and the second runs forward and
backward beside them.

Printed: one row per configuration, the measured GB, the estimate for the same shape on a CPU
(`resources.train_memory_gb(..., device="cpu")`) and their ratio. What only exists on a GPU
(CUDA context, NCCL buffers, FSDP sharding) cannot be measured here; see docs/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from w2s_ray.models import resources

STEPS = 2
PROMPT_FRACTION = 0.5  # the loss covers the answer half of each row, as SFT masks prompts
PAD_DIVISOR = 4
MMAP_THRESHOLD = 64 * 1024  # every other row ends in a quarter of padding


@dataclass(frozen=True)
class Shape:
    """A model and the layout it trains with: one row of the benchmark."""

    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    micro_batch: int
    seq: int
    bf16: bool = False
    checkpointing: bool = False
    grad_accum: int = 1

    @property
    def arch(self) -> resources.Arch:
        return resources.Arch(self.layers, self.hidden, self.heads, self.heads, self.ffn, self.vocab)

    @property
    def plan(self) -> resources.TrainPlan:
        return resources.TrainPlan(1, "ddp", self.micro_batch, self.grad_accum, self.checkpointing)

    def label(self) -> str:
        return (f"{self.name} {self.arch.params / 1e6:.0f}M b{self.micro_batch}x{self.grad_accum} "
                f"s{self.seq} {'bf16' if self.bf16 else 'fp32'}{' ckpt' if self.checkpointing else ''}")


# Qwen2's proportions (ffn ~ 2.7 x hidden, untied embeddings) at 2.5M, 12M, 36M and 107M
# parameters; the vocabulary is smaller than Qwen's 152K so that the layers, not the
# embeddings, hold most of the larger models, and logits still weigh as much as the layers.
XS = {"layers": 2, "hidden": 128, "heads": 2, "ffn": 352, "vocab": 8192}
S = {"layers": 4, "hidden": 256, "heads": 4, "ffn": 704, "vocab": 16384}
M = {"layers": 6, "hidden": 512, "heads": 8, "ffn": 1408, "vocab": 16384}
L = {"layers": 8, "hidden": 768, "heads": 12, "ffn": 2048, "vocab": 32768}

QUICK = [
    Shape("XS", **XS, micro_batch=8, seq=128),
    Shape("XS", **XS, micro_batch=8, seq=128, bf16=True, checkpointing=True, grad_accum=2),
]
DEFAULT = [
    *QUICK,
    Shape("S", **S, micro_batch=4, seq=256),
    Shape("S", **S, micro_batch=4, seq=256, bf16=True),
    Shape("S", **S, micro_batch=4, seq=256, checkpointing=True, grad_accum=2),
    Shape("M", **M, micro_batch=2, seq=256),
    Shape("M", **M, micro_batch=1, seq=512, bf16=True, checkpointing=True, grad_accum=2),
    Shape("L", **L, micro_batch=1, seq=256),
    Shape("L", **L, micro_batch=1, seq=256, bf16=True, checkpointing=True),
]


def status_gb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS now, VmHWM the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e9  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Start the peak (VmHWM) afresh at the current RSS: the imports' own transient peak can
    exceed a small model's whole training step, and would hide it."""
    Path("/proc/self/clear_refs").write_text("5")


def train_once(shape: Shape, threads: int) -> dict[str, float]:
    """Runs in the child: build the model, train STEPS steps, return peak RSS above the imports."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from w2s_ray.config import TrainHParams
    from w2s_ray.runtime import parallel
    from w2s_ray.runtime.trainer import optimize

    torch.set_num_threads(threads)
    reset_peak_rss()
    baseline = status_gb("VmRSS")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.ffn,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.heads, max_position_embeddings=shape.seq,
                         tie_word_embeddings=False, use_cache=False)
    model = Qwen2ForCausalLM(config)
    rows = shape.micro_batch * shape.grad_accum * STEPS
    ids = torch.randint(0, shape.vocab, (rows, shape.seq))
    labels = ids.clone()
    labels[:, : int(PROMPT_FRACTION * shape.seq)] = -100
    # Right padding as a bucket of unequal rows has it: the attention takes a padding mask.
    mask = torch.ones_like(ids)
    mask[::2, -shape.seq // PAD_DIVISOR:] = 0
    labels[mask == 0] = -100
    bucket = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    hp = TrainHParams(epochs=1, batch_size=shape.micro_batch * shape.grad_accum, grad_accum=shape.grad_accum,
                      activation_checkpointing=shape.checkpointing,
                      mixed_precision="bf16" if shape.bf16 else "no", torch_threads=threads)
    start = time.perf_counter()
    stats = optimize(parallel.wrap(model, hp, world=1, dev=torch.device("cpu")), [bucket], hp, seed=0)
    if stats["steps"] != STEPS:
        raise RuntimeError(f"ran {stats['steps']} steps, not {STEPS}: the peak may miss AdamW's states")
    return {"measured_gb": status_gb("VmHWM") - baseline, "seconds": time.perf_counter() - start}


def measure(shape: Shape, threads: int = 2) -> dict[str, float]:
    """Peak memory of one configuration, in a fresh interpreter so no other run's peak counts."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(asdict(shape)),
                           "--threads", str(threads)], capture_output=True, text=True, check=True,
                          env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def estimate_gb(shape: Shape) -> float:
    return resources.train_memory_gb(shape.arch, shape.plan, shape.seq, bf16=shape.bf16, device="cpu")["total"]


def compare(shapes: list[Shape], threads: int = 2, jobs: int = 1) -> pd.DataFrame:
    """One row per shape; `jobs` configurations run at once (each in its own process, so one
    run's memory never counts in another's peak; only their seconds are shared)."""
    with ThreadPoolExecutor(jobs) as pool:
        measured = list(pool.map(lambda shape: measure(shape, threads), shapes))
    rows = []
    for shape, got in zip(shapes, measured):
        est = estimate_gb(shape)
        rows.append({"shape": shape.label(), "measured GB": round(got["measured_gb"], 3),
                     "estimate GB": round(est, 3), "estimate / measured": round(est / got["measured_gb"], 2),
                     "seconds": round(got["seconds"], 1)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two smallest configurations (CI)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(Shape(**json.loads(args.child)), args.threads)))
        return
    table = compare(QUICK if args.quick else DEFAULT, args.threads)
    print(table.to_markdown(index=False))
    worst = (table["estimate / measured"] - 1).abs().max()
    print(f"\nworst |estimate / measured - 1|: {worst:.2f} (goal: <= 0.25)")


if __name__ == "__main__":
    main()
