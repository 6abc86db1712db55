"""The weak model's confidence in its own labels D̄^b: its mean log-probability per token of each
label and its EOS, the label fed whole as supervised training feeds it (`encoding.encode` at the
weak rung's `train.max_length`), through Ray Data like generation. The labelling pass records
only the completions and their answers, so this is a forward pass of its own; gold is never read.
"""

from __future__ import annotations

from w2s_ray.artifacts import Artifact
from w2s_ray.models.location import ModelRef
from w2s_ray.runtime.choose import key_backend
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.data import TABLE, read

VERSION = 1


def label_confidence(ctx: StageContext, model: ModelRef, labels: Artifact) -> Artifact:
    """`labels` with a `confidence` column: `model`'s mean log-probability per label token."""
    lay = ctx.layout(model.rung)
    max_length = lay.train.max_length
    art = Artifact.make("label_confidence", VERSION, [model.id, labels.id],
                        {"dtype": lay.inference.dtype, "max_length": max_length, **key_backend(lay.inference)})

    def build(folder: str) -> dict:
        from w2s_ray.runtime.inference import LOGPROBS, map_with_model

        scored, ran = map_with_model(lay.inference, ctx.store, model, read(ctx, labels), LOGPROBS,
                                     ["confidence"], max_length, {"max_length": max_length})
        ctx.store.write_table(f"{folder}/{TABLE}", scored)
        return {"rows": len(scored), **ran}

    return ctx.builder.ensure(art, build, tag="label_confidence")
