"""A causal model's log-probabilities of given answers, as an artifact: DPO's reference terms
(computed once from the frozen reference, so the training run holds one model) and a DPO
model's implicit reward.

log p(answer and EOS | prompt) is summed over exactly the tokens supervised training scores
(`encoding.encode` at the DPO recipe's `max_length`), so at DPO's first step the policy's terms
equal the reference's. It always runs on the transformers backend, whose forward pass is the
training loop's: vLLM's prompt log-probabilities come from other kernels, and a reference
that differs from the policy's own forward biases every log-ratio.
"""

from __future__ import annotations

import pandas as pd

from w2s_ray.artifacts import Artifact
from w2s_ray.models.location import ModelRef
from w2s_ray.stages import data
from w2s_ray.stages.context import StageContext

VERSION = 1


def logprobs(ctx: StageContext, model: ModelRef, table: Artifact, columns: list[str],
             tag: str = "logprobs") -> Artifact:
    """`table` with `logp_<column>` for each of `columns`: `model`'s log-probability of that
    column's text as the answer to the row's prompt."""
    inf = ctx.layout(model.rung).inference
    max_length = ctx.layout(model.rung).dpo.max_length
    art = Artifact.make("logprobs", VERSION, [model.id, table.id],
                        {"columns": columns, "max_length": max_length, "dtype": inf.dtype})

    def build(folder: str) -> dict:
        from w2s_ray.runtime.inference import LOGPROBS, map_with_model

        df = data.read(ctx, table)
        sent = pd.concat([pd.DataFrame({"prompt": df["prompt"], "label_text": df[c]}) for c in columns],
                         ignore_index=True)
        fixed = inf.model_copy(update={"backend": "transformers"})
        out, ran = map_with_model(fixed, ctx.store, model, sent, LOGPROBS, ["logp"], max_length,
                                  {"max_length": max_length})
        for i, c in enumerate(columns):
            df[f"logp_{c}"] = out["logp"].to_numpy()[i * len(df):(i + 1) * len(df)]
        ctx.store.write_table(f"{folder}/{data.TABLE}", df)
        return {"rows": len(df), "compute_seconds": ran["compute_seconds"]}

    return ctx.builder.ensure(art, build, tag=tag)
