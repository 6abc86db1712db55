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
(`resources.train_memory_gb(..., device="cpu")`) and their ratio.

Then the multi-rank rows (`Ranked`): the real widths of Qwen-1.5 sizes (hidden, ffn, vocabulary,
heads) with 1 or 2 layers, trained by 1, 2 or 4 gloo processes started here torchrun-style,
loaded by `runtime.parallel.load` (FSDP2 full shard) and trained by `optimize`, fp32 (bf16
matrix products are ~200x slower than fp32 on a CPU without AVX-512 BF16). Printed per rank:
measured peak, estimate, ratio and the estimate's terms; and, where a size ran at 1 and 2
layers, the measured growth per layer and the root's share against the estimate's. What only
exists on a GPU (CUDA context, NCCL buffers, the caching allocator) cannot be measured here;
see docs/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
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


#: The widths a multi-rank row keeps: the Qwen-1.5 sizes' real ones, and a narrow Qwen2 for the
#: test's smallest run (its vocabulary still holds a third of the parameters, as 0.5B's does).
WIDTHS: dict[str, resources.Arch] = {**resources.ARCHS, "narrow": resources.Arch(1, 256, 4, 4, 704, 16384)}


@dataclass(frozen=True)
class Ranked:
    """A multi-rank row: a Qwen-1.5 size's real hidden size, ffn, vocabulary and heads
    (`resources.ARCHS`) with `layers` decoder layers, trained by `world` gloo processes under
    FSDP2 full shard (one process: unwrapped, as a single worker trains), fp32."""

    size: str
    layers: int
    world: int
    micro_batch: int = 1
    seq: int = 32
    grad_accum: int = 2

    @property
    def arch(self) -> resources.Arch:
        return replace(WIDTHS[self.size], layers=self.layers)

    @property
    def plan(self) -> resources.TrainPlan:
        return resources.TrainPlan(self.world, "fsdp" if self.world > 1 else "ddp", self.micro_batch,
                                   self.grad_accum, False)

    def label(self) -> str:
        return (f"{self.size} L{self.layers} {self.arch.params / 1e6:.0f}M x{self.world} "
                f"b{self.micro_batch}x{self.grad_accum} s{self.seq}")


# 1, 2 and 4 processes at one layer, and a second layer where the root's terms are smallest
# beside the layers' (2 processes): the per-layer and root terms separate there.
RANKED_QUICK = [Ranked("0.5b", 1, 1), Ranked("0.5b", 1, 2), Ranked("0.5b", 2, 2), Ranked("0.5b", 1, 4)]
RANKED = [*RANKED_QUICK, Ranked("0.5b", 2, 1), Ranked("0.5b", 2, 4),
          *(Ranked("1.8b", layers, 2) for layers in (1, 2))]


def rows_for(vocab: int, seq: int, rows: int):
    """Random token rows with right padding on every other row and the loss on the answer half."""
    import torch

    ids = torch.randint(0, vocab, (rows, seq))
    labels = ids.clone()
    labels[:, : int(PROMPT_FRACTION * seq)] = -100
    mask = torch.ones_like(ids)
    mask[::2, -seq // PAD_DIVISOR:] = 0
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_ranked(row: Ranked, rank: int, port: int, threads: int) -> dict[str, float]:
    """Runs in each rank's process: join the gloo group, load the model the way a training worker
    does (`parallel.load`: rank 0 builds it, the others receive their shards), then train STEPS
    steps through `optimize`. The peak counts from the process group's start, so the sharded
    states are in it; loading's own transient (rank 0's full copy) is not, since the peak is
    reset once the model is sharded."""
    import gc

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from w2s_ray.config import TrainHParams
    from w2s_ray.runtime import parallel
    from w2s_ray.runtime.tasks import SFTTask
    from w2s_ray.runtime.trainer import optimize

    arch = row.arch
    config = Qwen2Config(vocab_size=arch.vocab, hidden_size=arch.hidden, intermediate_size=arch.ffn,
                         num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
                         num_key_value_heads=arch.kv_heads, max_position_embeddings=row.seq,
                         tie_word_embeddings=arch.tied, use_cache=False)

    class RandomQwen2(SFTTask):
        def load(self, path: str):
            torch.manual_seed(0)
            return Qwen2ForCausalLM(config)

        def empty(self, path: str):
            return Qwen2ForCausalLM(config)

    torch.set_num_threads(threads)
    if row.world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                             world_size=row.world)
    baseline = status_gb("VmRSS")
    hp = TrainHParams(epochs=1, batch_size=row.micro_batch * row.grad_accum * row.world,
                      grad_accum=row.grad_accum, num_workers=row.world, strategy=row.plan.strategy,
                      mixed_precision="no", torch_threads=threads)
    dev = torch.device("cpu")
    task = RandomQwen2()
    start = time.perf_counter()
    model = parallel.load(task, "", hp, rank, row.world, dev)
    gc.collect()
    loaded = status_gb("VmRSS") - baseline
    reset_peak_rss()
    torch.manual_seed(1)
    bucket = rows_for(arch.vocab, row.seq, hp.batch_size * STEPS)
    load_seconds, start = time.perf_counter() - start, time.perf_counter()
    stats = optimize(model, [bucket], hp, seed=0, rank=rank, world=row.world, task=task, dev=dev)
    if stats["steps"] != STEPS:
        raise RuntimeError(f"ran {stats['steps']} steps, not {STEPS}: the peak may miss AdamW's states")
    out = {"rank": rank, "measured_gb": status_gb("VmHWM") - baseline, "loaded_gb": loaded,
           "load_seconds": load_seconds, "seconds": time.perf_counter() - start}
    if row.world > 1:
        torch.distributed.destroy_process_group()
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_ranked(row: Ranked, threads: int = 1) -> list[dict[str, float]]:
    """Each rank's peak: `world` fresh processes, torchrun-style (a rendezvous port, one rank each)."""
    port = free_port()
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    procs = [subprocess.Popen([sys.executable, __file__, "--rank-child", json.dumps(asdict(row)),
                               "--rank", str(rank), "--port", str(port), "--threads", str(threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for rank in range(row.world)]
    outs = [proc.communicate() for proc in procs]
    for proc, (_, err) in zip(procs, outs):
        if proc.returncode:
            raise RuntimeError(f"{row.label()}: a rank failed:\n{err[-3000:]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


#: The estimate's parts, under the names the multi-rank table prints them by.
TERMS = {"sharded states": ("weights", "adam", "autocast_copy", "ddp_buckets"), "gathered layer": ("gathered",),
         "root unit gathered": ("head_gathered",), "gradients": ("grads",),
         "step temporaries": ("step_temporaries",),
         "reduce buffers": ("reduce_buffers",), "activations": ("activations",), "logits": ("logits",)}


def ranked_estimate(row: Ranked) -> dict[str, float]:
    """The CPU estimate of one rank of `row`, in GB, by the terms of TERMS (0 where absent from
    the moment the estimate takes as the peak), and its total."""
    parts = resources.train_memory_gb(row.arch, row.plan, row.seq, bf16=False, device="cpu")
    out = {term: sum(parts.get(key, 0.0) for key in keys) for term, keys in TERMS.items()}
    return {**out, "total": parts["total"]}


def compare_ranked(rows: list[Ranked], threads: int = 1) -> pd.DataFrame:
    """One line per rank of every row, run one row after the other (each row's ranks at once)."""
    return ranked_table(rows, [measure_ranked(row, threads) for row in rows])


def ranked_table(rows: list[Ranked], measured: list[list[dict[str, float]]]) -> pd.DataFrame:
    """Each rank's measurement (`measure_ranked`'s) beside its row's estimate and terms."""
    lines = []
    for row, ranks in zip(rows, measured):
        est = ranked_estimate(row)
        for got in ranks:
            lines.append({"row": row.label(), "rank": got["rank"], "measured GB": round(got["measured_gb"], 3),
                          "estimate GB": round(est["total"], 3),
                          "estimate / measured": round(est["total"] / got["measured_gb"], 2),
                          **{term: round(est[term], 3) for term in TERMS},
                          "seconds": round(got["seconds"], 1)})
    return pd.DataFrame(lines)


def per_layer(table: pd.DataFrame, rows: list[Ranked]) -> pd.DataFrame:
    """Where a size ran at 1 and 2 layers on the same world: the measured peak's growth per layer
    against the estimate's, and what is left at 0 layers (the root: embeddings, head, their
    states and buffers). Peak memory is linear in the layers, so two points separate them."""
    peak = table.groupby("row")[["measured GB", "estimate GB"]].max()
    label = {(r.size, r.world, r.layers): r.label() for r in rows}
    out = []
    for (size, world, layers), one in label.items():
        two = label.get((size, world, 2))
        if layers != 1 or two is None:
            continue
        slope = peak.loc[two] - peak.loc[one]
        out.append({"size": size, "world": world, "per layer measured GB": round(slope["measured GB"], 3),
                    "per layer estimate GB": round(slope["estimate GB"], 3),
                    "root measured GB": round(peak.loc[one, "measured GB"] - slope["measured GB"], 3),
                    "root estimate GB": round(peak.loc[one, "estimate GB"] - slope["estimate GB"], 3)})
    return pd.DataFrame(out)


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
    parser.add_argument("--rank-child", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_once(Shape(**json.loads(args.child)), args.threads)))
        return
    if args.rank_child:
        print(json.dumps(train_ranked(Ranked(**json.loads(args.rank_child)), args.rank, args.port, args.threads)))
        return
    table = compare(QUICK if args.quick else DEFAULT, args.threads)
    print(table.to_markdown(index=False))
    worst = (table["estimate / measured"] - 1).abs().max()
    print(f"\nworst |estimate / measured - 1|: {worst:.2f} (goal: <= 0.25)")
    rows = RANKED_QUICK if args.quick else RANKED
    ranked = compare_ranked(rows)
    print("\nOne row per rank, FSDP2 over gloo (x1: one process, unwrapped), fp32; terms: the estimate's GB\n")
    print(ranked.to_markdown(index=False))
    print("\n" + per_layer(ranked, rows).to_markdown(index=False))
    low, high = ranked["estimate / measured"].min(), ranked["estimate / measured"].max()
    print(f"\nestimate / measured over the ranks: {low:.2f} to {high:.2f} (goal: 0.8 to 1.25)")


if __name__ == "__main__":
    main()
