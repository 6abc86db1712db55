"""The training step and generation on one CUDA GPU, with torch and transformers alone.

    python benchmarks/gpu_check.py                 # 0.5b and 1.8b (about 3 minutes on an H100)
    python benchmarks/gpu_check.py --sizes 0.5b 1.8b 4b
    python benchmarks/gpu_check.py --tiny          # tiny shapes, on CPU when there is no GPU

For random-initialised Qwen2 models of the real Qwen-1.5 shapes (`models/resources.py`), at the
resource plan's micro-batch and activation checkpointing, it runs the project's own optimisation
loop (`runtime/trainer.py`: the same loss, bf16 autocast over fp32 master weights, AdamW and
clipping as a stage) for a few steps, then greedy generation with `generate` as the transformers
backend calls it, and prints per size: the measured peak (`torch.cuda.max_memory_allocated` and
reserved), the memory estimate for one GPU and their ratio, training tokens/s and MFU against the
card's bf16 peak, and generated tokens/s. It needs neither Ray nor vLLM, so it runs on a machine
that has neither. One process holds one size at a time; each size starts from a clean peak.
"""

from __future__ import annotations

import argparse
import time

import torch

from w2s_ray.config import TrainHParams
from w2s_ray.models import resources
from w2s_ray.runtime import parallel
from w2s_ray.runtime.tasks import SFTTask
from w2s_ray.runtime.trainer import optimize

#: dense bf16 peak per card (TFLOP/s), by a word of torch.cuda.get_device_name
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
TINY = resources.Arch(layers=2, hidden=64, heads=2, kv_heads=2, ffn=128, vocab=512)
PROMPT_TOKENS, NEW_TOKENS, GENERATE_ROWS = 128, 64, 32


def qwen2(arch: resources.Arch, dev: torch.device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=arch.vocab, hidden_size=arch.hidden, intermediate_size=arch.ffn,
                         num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
                         num_key_value_heads=arch.kv_heads, max_position_embeddings=4096,
                         tie_word_embeddings=False, use_cache=False)
    with dev:
        return Qwen2ForCausalLM(config)


def rows(arch: resources.Arch, n: int, seq: int) -> dict[str, torch.Tensor]:
    """`n` full-length rows: a prompt (no loss) and an answer, as the SFT encoding lays them out."""
    ids = torch.randint(0, arch.vocab, (n, seq))
    labels = ids.clone()
    labels[:, : seq // 2] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def peak_tflops(dev: torch.device) -> float | None:
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def check(size: str, arch: resources.Arch, plan: resources.TrainPlan, seq: int, steps: int,
          dev: torch.device) -> dict[str, float | str | None]:
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(0)
    hp = TrainHParams(epochs=1, batch_size=plan.micro_batch * plan.grad_accum, grad_accum=plan.grad_accum,
                      activation_checkpointing=plan.activation_checkpointing, use_gpu=cuda,
                      mixed_precision="bf16" if cuda else "no", lr=1e-5)
    model = parallel.wrap(qwen2(arch, torch.device("cpu")), hp, world=1, dev=dev)
    bucket = rows(arch, hp.batch_size * steps, seq)
    start = time.perf_counter()
    stats = optimize(model, [bucket], hp, seed=0, task=SFTTask(), dev=dev)
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    allocated = torch.cuda.max_memory_allocated(dev) / 1e9 if cuda else None
    reserved = torch.cuda.max_memory_reserved(dev) / 1e9 if cuda else None
    estimate = resources.train_memory_gb(arch, plan, seq, bf16=cuda, device="gpu" if cuda else "cpu")["total"]
    tokens_s = stats["steps"] * hp.batch_size * seq / seconds
    peak = peak_tflops(dev)
    model.eval()
    model.config.use_cache = True
    prompts = torch.randint(0, arch.vocab, (GENERATE_ROWS, PROMPT_TOKENS), device=dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
        start = time.perf_counter()
        model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=NEW_TOKENS,
                       min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
        if cuda:
            torch.cuda.synchronize(dev)
        generate_s = time.perf_counter() - start
    del model
    return {"size": size, "micro x accum": f"{plan.micro_batch} x {plan.grad_accum}",
            "checkpointing": plan.activation_checkpointing, "steps": stats["steps"],
            "peak allocated GB": allocated, "peak reserved GB": reserved, "estimate GB": estimate,
            "estimate / allocated": estimate / allocated if allocated else None,
            "train tokens/s": tokens_s,
            "MFU": 6 * arch.params * tokens_s / (peak * 1e12) if peak else None,
            "generated tokens/s": GENERATE_ROWS * NEW_TOKENS / generate_s,
            "final loss": stats["final_loss"]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["0.5b", "1.8b"], choices=list(resources.ARCHS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq", type=int, default=resources.SEQ)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (what the test runs on CPU)")
    args = parser.parse_args(argv)
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cpu" and not args.tiny:
        parser.error("no CUDA GPU here: --tiny runs the check with tiny shapes on the CPU")
    if dev.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    jobs = ([("tiny", TINY, resources.TrainPlan(1, "ddp", 2, 2, True), 32)] if args.tiny else
            [(s, resources.ARCHS[s], one_gpu(s), args.seq) for s in args.sizes])
    results = []
    for size, arch, plan, seq in jobs:
        results.append(check(size, arch, plan, seq, args.steps, dev))
        print(" | ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}"
                         for k, v in results[-1].items()), flush=True)
    return results


def one_gpu(size: str) -> resources.TrainPlan:
    """The plan's micro-batch and checkpointing for `size`, on the one GPU at hand (a plan that
    shards over several GPUs keeps its micro-batch; the states then are the whole model's)."""
    plan = resources.PLANS[size].train
    return resources.TrainPlan(1, "ddp", plan.micro_batch, plan.grad_accum, plan.activation_checkpointing)


if __name__ == "__main__":
    main()
