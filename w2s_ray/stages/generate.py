"""Greedy generation over a prompt table through Ray Data: an actor pool, model loaded once per actor."""

from __future__ import annotations

import pandas as pd
import ray

from w2s_ray.artifacts import Artifact
from w2s_ray.capabilities import registry
from w2s_ray.stages import data
from w2s_ray.stages.backends import BACKENDS
from w2s_ray.stages.context import ModelRef, StageContext, local_model_path

VERSION = 1


class _Actor:
    """Ray Data actor: resolves the model to a local folder on its own node, then wraps a backend."""

    def __init__(self, backend: type, root: str, source: str, is_artifact: bool, torch_threads: int,
                 dtype: str):
        path = local_model_path(root, source, is_artifact)
        self.impl = backend(path, torch_threads, dtype)

    def __call__(self, batch):
        return self.impl(batch)


def map_with_model(ctx: StageContext, model: ModelRef, df: pd.DataFrame, backend: type,
                   outputs: list[str]) -> tuple[pd.DataFrame, float]:
    """`df` with the backend's `outputs` columns added, through a Ray Data actor pool (model loaded
    once per actor); also the backend's summed compute seconds. Row order is kept."""
    inf = ctx.config.inference
    rows = df.reset_index(drop=True).assign(_row=lambda d: range(len(d)))
    ds = ray.data.from_pandas(rows).map_batches(
        _Actor,
        fn_constructor_kwargs={"backend": backend, "root": ctx.store.root, "source": model.source,
                               "is_artifact": model.artifact is not None,
                               "torch_threads": inf.torch_threads, "dtype": inf.dtype},
        batch_size=inf.batch_size,
        compute=ray.data.ActorPoolStrategy(size=inf.num_actors),
        num_cpus=inf.cpus_per_actor,
        num_gpus=inf.gpus_per_actor or None,
        batch_format="numpy",
    )
    out = ds.to_pandas()[["_row", *outputs, "compute_seconds"]]
    compute = float(out.pop("compute_seconds").sum())
    merged = rows.merge(out, on="_row").sort_values("_row").drop(columns="_row")
    return merged.reset_index(drop=True), compute


def run_generation(ctx: StageContext, model: ModelRef, prompts: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Completions for every row of `prompts` with the extracted answer, and the backend's compute seconds."""
    df = prompts.copy()
    df["max_new_tokens"] = [registry.get(c).max_new_tokens for c in df["capability"]]
    # Homogeneous batches: rows of one capability and similar length pad and stop together.
    df = df.assign(_len=df["prompt"].str.len()).sort_values(["capability", "_len"]).drop(columns="_len")
    out, compute = map_with_model(ctx, model, df[["uid", "capability", "prompt", "max_new_tokens"]],
                                  BACKENDS[ctx.config.inference.backend], ["completion"])
    merged = prompts.drop(columns=["label_text", "answer"], errors="ignore").merge(
        out[["uid", "completion"]], on="uid")
    merged["label_text"] = merged["completion"].astype(str)
    merged["answer"] = [registry.get(c).extract_answer(p, t) for c, p, t in
                        zip(merged["capability"], merged["prompt"], merged["label_text"])]
    return merged.drop(columns="completion"), compute


def generate(ctx: StageContext, model: ModelRef, table: Artifact, tag: str = "generate") -> Artifact:
    """The model's greedy outputs on a table's prompts, as a table of the same schema."""
    inf = ctx.config.inference
    art = Artifact.make("generate", VERSION, [model.id, table.id],
                        {"dtype": inf.dtype, "max_new_tokens": {c: registry.get(c).max_new_tokens
                                                                for c in ctx.config.capabilities}})

    def build(folder: str) -> dict:
        out, compute = run_generation(ctx, model, data.read(ctx, table))
        ctx.store.write_table(f"{folder}/{data.TABLE}", out)
        return {"rows": len(out), "parsed": float(out["answer"].notna().mean()), "compute_seconds": compute}

    return ctx.builder.ensure(art, build, tag=tag, model=model.id)
