"""Sampled generation: k answers per prompt at a temperature, each from its own seed, as an
artifact (stage II of weak-to-strong reasoning samples the stage-I model's answers this way).

Row j of item `uid` is drawn with the seed `sample_seed(seed, uid, j)`, so a sample does not
depend on how rows are batched or spread over workers. The two backends sample from different
random streams, so the key always names the backend (resolved before any row is read), unlike
greedy generation's.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.capabilities import registry
from w2s_ray.models.location import ModelRef
from w2s_ray.runtime.choose import resolve_backend
from w2s_ray.stages import data
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.generate import with_completions

VERSION = 1


def sample_seed(seed: int, uid: str, j: int) -> int:
    return int(hashlib.sha256(f"{seed}:{uid}:{j}".encode()).hexdigest(), 16) % 2**31


def sampled_rows(prompts: pd.DataFrame, k: int, temperature: float, seed: int) -> pd.DataFrame:
    """Each prompt k times, row j with its own seed; `uid` names the row, `item` the prompt's uid."""
    rows = prompts[["uid", "capability", "prompt"]].loc[prompts.index.repeat(k)].reset_index(drop=True)
    rows["sample"] = list(range(k)) * len(prompts)
    rows["item"] = rows["uid"]
    rows["uid"] = [f"{u}#{j}" for u, j in zip(rows["item"], rows["sample"])]
    rows["sample_seed"] = [sample_seed(seed, u, j) for u, j in zip(rows["item"], rows["sample"])]
    rows["temperature"] = float(temperature)
    rows["max_new_tokens"] = [registry.get(c).max_new_tokens for c in rows["capability"]]
    rows["stop"] = [registry.get(c).stop for c in rows["capability"]]
    return rows


def sampling(ctx: StageContext, model: ModelRef, table: Artifact) -> Artifact:
    spec, inf = ctx.config.w2sr, ctx.layout(model.rung).inference
    caps = ctx.config.capabilities
    return Artifact.make("sample", VERSION, [model.id, table.id],
                         {"k": spec.samples, "temperature": spec.temperature, "seed": ctx.seed,
                          "dtype": inf.dtype, "backend": resolve_backend(inf, None, 0)[0],
                          "max_new_tokens": {c: registry.get(c).max_new_tokens for c in caps},
                          "stop": {c: registry.get(c).stop for c in caps}})


def sample(ctx: StageContext, model: ModelRef, table: Artifact, tag: str = "sample") -> Artifact:
    """`w2sr.samples` answers per prompt of `table` at `w2sr.temperature`: a table of
    (uid, capability, prompt, sample, label_text, answer), k rows per uid."""
    art = sampling(ctx, model, table)

    def build(folder: str) -> dict:
        from w2s_ray.runtime.inference import BACKENDS, map_with_model, max_generation_tokens

        spec = ctx.config.w2sr
        rows = sampled_rows(data.read(ctx, table), spec.samples, spec.temperature, ctx.seed)
        inf = ctx.layout(model.rung).inference
        # The backend the key names, whatever `auto` would pick once the rows are known.
        fixed = inf.model_copy(update={"backend": resolve_backend(inf, None, 0)[0]})
        out, ran = map_with_model(fixed, ctx.store, model, rows, BACKENDS, ["completion"],
                                  max_generation_tokens(rows))
        done = with_completions(rows, out)
        done = done.assign(uid=done["item"])[["uid", "capability", "prompt", "sample", "label_text", "answer"]]
        ctx.store.write_table(f"{folder}/{data.TABLE}", done.sort_values(["uid", "sample"]).reset_index(drop=True))
        return {"rows": len(done), "parsed": float(done["answer"].notna().mean()), **ran}

    return ctx.builder.ensure(art, build, tag=tag)
