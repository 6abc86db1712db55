"""How a training worker holds its model: DDP or FSDP2 full shard, mixed precision, activation
checkpointing, and the final model gathered for save_pretrained. Plain torch.distributed, no Ray:
the process group and the device come from whoever runs the loop (Ray Train's workers, or
`torchrun` and the GPU check), and the resumable checkpoints that need Ray Train are in
`checkpoints.py`.

FSDP is wrapped here with torch's `fully_shard` rather than Ray's `prepare_model(parallel_strategy=
"fsdp")`, which refuses CPU workers: the same code then runs on gloo here and NCCL on a cluster.
"""

from __future__ import annotations

import contextlib

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from w2s_ray.config import TrainHParams


def reads_weights(hp: TrainHParams, rank: int, world: int) -> bool:
    """Whether this rank reads the base weights from disk (see `load`)."""
    return hp.strategy != "fsdp" or world == 1 or rank == 0


def load(task, path: str, hp: TrainHParams, rank: int, world: int, dev: torch.device) -> torch.nn.Module:
    """The model as this worker trains it. Under FSDP only rank 0 reads the checkpoint into host
    memory; the other ranks build it on the meta device and receive their shards from rank 0
    (72B in fp32 is 290 GB: eight copies on one 8-GPU node would not fit its 1.1 TB)."""
    if hp.strategy != "fsdp" or world == 1:
        return wrap(task.load(path), hp, world, dev)
    if rank == 0:
        model = task.load(path)
        full = model.state_dict()  # keeps the full tensors while fully_shard replaces the params
    else:
        with torch.device("meta"):
            model = task.empty(path)
        full = {}
    model = wrap(model, hp, world, dev)
    if rank != 0:
        model.to_empty(device=dev)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True,
                                                               broadcast_from_rank0=True))
    for buffer in model.buffers():  # non-persistent ones (rotary frequencies) are not in `full`
        torch.distributed.broadcast(buffer, src=0)
    return model


def wrap(model: torch.nn.Module, hp: TrainHParams, world: int, dev: torch.device) -> torch.nn.Module:
    """DDP or FSDP2 around `model`; a single process keeps it unwrapped."""
    if hp.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if world == 1:
        return model.to(dev)
    if hp.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model.to(dev), device_ids=[dev] if dev.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # No `.to(device)` first: fully_shard moves each unit to the device as it shards it, so the
    # GPU never holds more than one unsharded layer.
    bf16 = hp.mixed_precision == "bf16"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                  reduce_dtype=torch.float32 if bf16 else None)
    # One FSDP unit per decoder layer (the classes HF marks as not to be split); untied input
    # embeddings and output head one each, so the root (final norm) never gathers both at once
    # (at 72B each is 1.25B parameters); then the root.
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mp_policy=policy)
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and head.weight is not embeddings.weight:
        fully_shard(embeddings, mp_policy=policy)
        fully_shard(head, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def autocast(hp: TrainHParams, dev: torch.device):
    """bf16 compute for DDP / single workers; FSDP casts through its own policy instead."""
    on = hp.mixed_precision == "bf16" and hp.strategy != "fsdp"
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=on)


def gradient_sync(model: torch.nn.Module, sync: bool):
    """DDP skips its all-reduce on every micro-batch but the last of a step: each rank's
    replicated gradient accumulates locally at no extra memory. FSDP2 reduce-scatters on every
    micro-batch instead, so its gradients stay sharded: skipping it would hold each layer's
    whole, unsharded fp32 gradient on every rank until the step's last micro-batch (4 bytes per
    parameter per GPU: 289 GB at 72B), the cost the plans were never meant to pay."""
    if hasattr(model, "no_sync") and not sync:  # DDP
        return model.no_sync()
    return contextlib.nullcontext()


def summed(value: float, world: int, dev: torch.device) -> float:
    """`value` summed over the ranks (a collective: every rank calls it)."""
    if world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=dev)
    torch.distributed.all_reduce(total)
    return float(total.item())


def full_state_dict(model: torch.nn.Module, hp: TrainHParams, world: int) -> dict[str, torch.Tensor] | None:
    """The whole model's weights to save, on CPU (with several ranks a collective: every rank
    calls it, rank 0 gets them); None: save the model as it is. bf16 runs save bf16, the
    precision the next stage and vLLM load, which halves the upload."""
    if world == 1:
        if hp.mixed_precision != "bf16":
            return None
        unwrapped = model.module if hasattr(model, "module") else model
        sd = {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()}
    else:
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if hp.mixed_precision == "bf16":
        sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
    return sd
