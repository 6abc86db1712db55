"""The run's throughput table: what each kind of stage measured, per model size, beside what the
dry run assumed.

Every stage that runs a model records its counts in the stage log (`models/speed.py`); this
sums the built stages of one (stage, rung, device) and divides once, so a table row is the
speed of all that kind's work in the run. The assumed figure is the dry run's for the same
model size (`plan.py`: A100 bf16 peak x MFU for training and scoring, its vLLM tokens per
GPU-second for generation), in the same unit: trained tokens per device-second for training,
generated ones for generation, input tokens for scoring. `throughput.csv` is what
`sweep.measured_throughput` hands a later dry run.
"""

from __future__ import annotations

import pandas as pd

from w2s_ray import hardware, plan
from w2s_ray.models import speed

COLUMNS = ["stage", "kind", "rung", "params", "device", "stages", "samples", "prompt_tokens",
           "generated_tokens", "trained_tokens", "padding_share", "compute_s", "device_s",
           "tokens_per_s", "samples_per_s", "tokens_per_device_s", "assumed_tokens_per_device_s",
           "mfu", "assumed_mfu"]


def assumed(kind: str, params: int | None) -> tuple[float | None, float | None]:
    """The dry run's tokens per device-second and MFU for a model of `params` parameters."""
    if not params:
        return None, None
    peak = hardware.DEFAULT["tflops"] * 1e12  # the dry run's assumed card
    if kind == "generation":
        rate = plan.vllm_tokens_per_gpu_s(params)
        return rate, rate * speed.FLOPS_PER_TOKEN[kind] * params / peak
    return peak * plan.MFU / (speed.FLOPS_PER_TOKEN[kind] * params), plan.MFU


def table(stage_log: pd.DataFrame) -> pd.DataFrame:
    """One row per (stage, rung, device) of the stages this run built."""
    if stage_log.empty or "throughput" not in stage_log:
        return pd.DataFrame(columns=COLUMNS)
    built = stage_log[(stage_log["status"] == "built") & stage_log["throughput"].apply(isinstance, args=(dict,))]
    groups: dict[tuple, list[dict]] = {}
    for stage, record in zip(built["stage"], built["throughput"]):
        groups.setdefault((stage, record["kind"], record.get("rung"), record.get("device")), []).append(record)
    rows = []
    for (stage, kind, rung, device), records in sorted(groups.items(), key=lambda g: tuple(map(str, g[0]))):
        total = speed.combined(records)
        got = speed.figures(total)
        rate, mfu = assumed(kind, total.get("params"))
        rows.append({"stage": stage, "kind": kind, "rung": rung, "params": total.get("params"),
                     "device": device, "stages": len(records), "samples": total["samples"],
                     "prompt_tokens": total.get("prompt_tokens"),
                     "generated_tokens": total.get("generated_tokens"),
                     "trained_tokens": total.get("trained_tokens"), "padding_share": got["padding_share"],
                     "compute_s": total["compute_seconds"], "device_s": total["device_seconds"],
                     "tokens_per_s": got["tokens_per_s"], "samples_per_s": got["samples_per_s"],
                     "tokens_per_device_s": got["tokens_per_device_s"],
                     "assumed_tokens_per_device_s": rate, "mfu": got["mfu"], "assumed_mfu": mfu})
    return pd.DataFrame(rows, columns=COLUMNS)


def records(frame: pd.DataFrame) -> list[dict]:
    """The table as JSON-safe records for run.json (NaN as null)."""
    return [{k: None if pd.isna(v) else v.item() if hasattr(v, "item") else v for k, v in row.items()}
            for row in frame.to_dict("records")]
