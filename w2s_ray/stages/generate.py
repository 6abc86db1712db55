"""Greedy generation over a prompt table: a model's outputs on a table's prompts, with the
extracted answers, as an artifact. How the rows are mapped (Ray Data, engine hosts or warm
workers, the backend) is `runtime/inference.py`'s.

Both backends (vLLM, transformers) decode greedily with the same budgets and stop strings, and
in float32 on CPU their outputs agree token for token (tests/test_vllm.py), so there a stage
built by one serves a sweep that runs the other; elsewhere the key names the backend
(`choose.key_backend`).
"""

from __future__ import annotations

import functools

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.capabilities import registry
from w2s_ray.models.location import ModelRef
from w2s_ray.runtime.choose import key_backend
from w2s_ray.stages import data
from w2s_ray.stages.context import StageContext

# 2: every row ends at its own budget and stop string (a batch used to run to its longest)
VERSION = 2


def run_generation(ctx: StageContext, model: ModelRef, tables: list[pd.DataFrame]
                   ) -> tuple[list[pd.DataFrame], dict]:
    """Completions for every row of each prompt table with the extracted answer, in one pass of
    the model (the tables' uids are distinct), and what ran them."""
    sent = pd.concat([t[["uid", "capability", "prompt"]] for t in tables], ignore_index=True)
    if sent["uid"].duplicated().any():
        raise ValueError("tables generated in one pass must not share a uid")
    sent["max_new_tokens"] = [registry.get(c).max_new_tokens for c in sent["capability"]]
    sent["stop"] = [registry.get(c).stop for c in sent["capability"]]
    # Homogeneous batches: rows of one capability and similar length pad and stop together.
    sent = sent.assign(_len=sent["prompt"].str.len()).sort_values(["capability", "_len"]).drop(columns="_len")
    from w2s_ray.runtime.inference import BACKENDS, map_with_model, max_generation_tokens

    out, ran = map_with_model(ctx.layout(model.rung).inference, ctx.store, model, sent, BACKENDS,
                              ["completion"], max_generation_tokens(sent))
    return [with_completions(t, out) for t in tables], ran


def with_completions(prompts: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
    merged = prompts.drop(columns=["label_text", "answer"], errors="ignore").merge(
        out[["uid", "completion"]], on="uid")
    merged["label_text"] = merged["completion"].astype(str)
    # object dtype: pandas would infer its string dtype and turn an unparseable None into NaN
    merged["answer"] = pd.Series([registry.get(c).extract_answer(p, t) for c, p, t in
                                  zip(merged["capability"], merged["prompt"], merged["label_text"])],
                                 index=merged.index, dtype=object)
    return merged.drop(columns="completion")


def generation(ctx: StageContext, model: ModelRef, table: Artifact) -> Artifact:
    """The artifact of the model's greedy outputs on a table's prompts."""
    inf = ctx.layout(model.rung).inference
    caps = ctx.config.capabilities
    return Artifact.make("generate", VERSION, [model.id, table.id],
                         {"dtype": inf.dtype, "max_new_tokens": {c: registry.get(c).max_new_tokens for c in caps},
                          "stop": {c: registry.get(c).stop for c in caps}, **key_backend(inf)})


def generate(ctx: StageContext, model: ModelRef, table: Artifact, tag: str = "generate",
             along: dict[str, Artifact] | None = None) -> Artifact:
    """The model's greedy outputs on a table's prompts, as a table of the same schema.

    `along` (tag -> table): other prompt tables a later stage of the sweep will generate with
    this model (its evaluation split), made in the same pass and committed as the artifacts
    `generate(ctx, model, t, tag)` names, so the model loads (an engine starts) once for all.
    """

    def build(folder: str) -> dict:
        extra = {name: t for name, t in (along or {}).items()
                 if not ctx.store.committed(generation(ctx, model, t))}
        outs, ran = run_generation(ctx, model, [data.read(ctx, t) for t in (table, *extra.values())])
        for (extra_tag, extra_table), out in zip(extra.items(), outs[1:]):
            ctx.builder.ensure(generation(ctx, model, extra_table),
                               functools.partial(write_generation, ctx, out, {"generated_with": art.id}),
                               tag=extra_tag)
        return write_generation(ctx, outs[0], ran, folder)

    art = generation(ctx, model, table)
    return ctx.builder.ensure(art, build, tag=tag)


def write_generation(ctx: StageContext, out: pd.DataFrame, ran: dict, folder: str) -> dict:
    ctx.store.write_table(f"{folder}/{data.TABLE}", out)
    return {"rows": len(out), "parsed": float(out["answer"].notna().mean()), **ran}
