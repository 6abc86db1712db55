"""What a stage measured about its own speed, as one record, and the figures derived from it.

A stage's record (`measured`) holds counts only: samples, tokens (prompt and generated for
inference, trained for training, with the padded slots a training batch computed), compute
seconds, the device and how many of it the stage held. The figures (tokens/s, samples/s,
device-seconds, MFU) are derived from it (`figures`), so records of several stages of a kind
add up before dividing. MFU is counted against the card's dense bf16 peak (`PEAK_FLOPS`), with
6 x params FLOPs per trained token and 2 x params per token of a forward pass; on a CPU, or a
card not in the table, it is left empty.
"""

from __future__ import annotations

from typing import Any

#: dense bf16 tensor-core peak FLOP/s by a substring of the CUDA device name (datasheets)
PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "A10G": 125e12, "L4": 121e12,
              "L40S": 362e12, "V100": 125e12, "B200": 2250e12}
#: FLOPs per token and parameter: forward + backward for training, forward alone for inference
FLOPS_PER_TOKEN = {"training": 6, "generation": 2, "scoring": 2}
COUNTS = ("samples", "prompt_tokens", "generated_tokens", "trained_tokens", "padded_tokens",
          "compute_seconds", "device_seconds")


def peak_flops(device: str | None) -> float | None:
    """The card's peak (`PEAK_FLOPS`), or None for a CPU or an unknown card. The longest name
    that matches wins (an "H100" is no "H10")."""
    if not device or device == "cpu":
        return None
    hits = [name for name in PEAK_FLOPS if name.lower() in device.lower()]
    return PEAK_FLOPS[max(hits, key=len)] if hits else None


def measured(kind: str, rung: str | None, params: int | None, device: str, devices: float,
             compute_seconds: float, samples: int, **tokens: int | None) -> dict[str, Any]:
    """A stage's record; `devices` is how many GPUs (or, on CPU, worker processes) it held while
    its `compute_seconds` ran."""
    return {"kind": kind, "rung": rung, "params": params, "device": device, "devices": devices,
            "samples": samples, "compute_seconds": compute_seconds,
            "device_seconds": compute_seconds * devices, **tokens}


def combined(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Several passes of one stage (the reward model's folds) as one record: counts add up."""
    if not records:
        return None
    out = dict(records[0])
    for key in COUNTS:
        values = [r.get(key) for r in records]
        out[key] = None if any(v is None for v in values) else sum(values)
    return out


def tokens(record: dict[str, Any]) -> int | None:
    """The tokens a stage's speed is counted in: trained ones for training, generated ones for
    generation, the input for scoring (a forward pass over prompt and label)."""
    key = {"training": "trained_tokens", "generation": "generated_tokens",
           "scoring": "prompt_tokens"}[record["kind"]]
    return record.get(key)


def figures(record: dict[str, Any]) -> dict[str, float | None]:
    """tokens/s, samples/s, tokens per device-second, the padding share and MFU of a record."""
    seconds, device_s = record.get("compute_seconds") or 0.0, record.get("device_seconds") or 0.0
    count = tokens(record)
    worked = (record.get("prompt_tokens") or 0) + (record.get("generated_tokens") or 0) \
        if record["kind"] != "training" else count
    peak, params = peak_flops(record.get("device")), record.get("params")
    padded = record.get("padded_tokens")
    return {
        "tokens_per_s": count / seconds if count is not None and seconds else None,
        "samples_per_s": record["samples"] / seconds if seconds else None,
        "tokens_per_device_s": count / device_s if count is not None and device_s else None,
        "padding_share": 1 - record["trained_tokens"] / padded if padded else None,
        "mfu": (FLOPS_PER_TOKEN[record["kind"]] * params * worked / (device_s * peak)
                if peak and params and worked is not None and device_s else None),
    }
