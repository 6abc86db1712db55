"""Greedy generation over a prompt table through Ray Data: on engine hosts that keep a model's
engine between its stages (vLLM, GPUs; `engines.py`), or in tasks on warm Ray workers that keep
the model between stages (transformers on CPU).

Both backends (vLLM, transformers) decode greedily with the same budgets and stop strings, and
in float32 on CPU their outputs agree token for token (tests/test_vllm.py), so there a stage
built by one serves a sweep that runs the other; elsewhere the key names the backend
(`choose.key_backend`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import pandas as pd
import ray

from w2s_ray.artifacts import Artifact
from w2s_ray.capabilities import registry
from w2s_ray.config import InferenceSpec
from w2s_ray.models import resources
from w2s_ray.stages import data, engines
from w2s_ray.stages.backends import BACKENDS, INPUTS
from w2s_ray.stages.choose import choose_backend, key_backend, model_params
from w2s_ray.stages.context import ModelRef, StageContext, local_model_path

# 2: every row ends at its own budget and stop string (a batch used to run to its longest)
VERSION = 2


def engine_options(inf: InferenceSpec, backend: str, max_tokens: int) -> dict:
    """What a backend needs beyond (path, threads, dtype): vLLM its engine layout and the most
    tokens one sequence of the stage can need, transformers the device (an actor that holds GPUs
    decodes on them)."""
    if backend != "vllm":
        return {"device": "cuda" if inf.gpus_per_actor else "cpu"}
    return {"tensor_parallel_size": inf.tensor_parallel_size, "max_num_seqs": inf.concurrency,
            "max_model_len": max_tokens}


def max_generation_tokens(df: pd.DataFrame) -> int:
    """An upper bound on prompt + output tokens of any row, before any tokenizer is loaded: a
    token covers at least one UTF-8 byte, plus a BOS."""
    return int((df["prompt"].str.encode("utf-8").str.len() + 1 + df["max_new_tokens"]).max())


@functools.lru_cache(maxsize=2)
def _process_model(backend: Callable, root: str, source: str, stored: bool, torch_threads: int,
                   dtype: str, options: tuple, model_id: str) -> Callable:
    """A model kept by a Ray worker process between stages: the weak and the strong model of a
    pair alternate, so two are kept."""
    counted = engines.existing_book()
    if counted is not None:
        counted.loaded.remote(model_id)
    return backend(local_model_path(root, source, stored), torch_threads, dtype, **dict(options))


def _map_in_process(batch, backend: Callable, root: str, source: str, stored: bool, torch_threads: int,
                    dtype: str, options: dict, model_id: str):
    return _process_model(backend, root, source, stored, torch_threads, dtype,
                          tuple(sorted(options.items())), model_id)(batch)


def in_worker_tasks(inf: InferenceSpec, backend: str) -> bool:
    """Whether a stage maps its rows in Ray tasks that reuse warm worker processes and their
    loaded models (transformers on CPU, where a load takes milliseconds) rather than on engine
    hosts (vLLM engines, GPUs). A host costs a new process with its imports once per model (~6 s
    on 2 cores, against ~0.4 s per stage on a warm worker: benchmarks/overhead.py) and holds its
    resources between stages, which only pays where the engine itself is slow to start."""
    return backend == "transformers" and not inf.gpus_per_actor


@contextlib.contextmanager
def model_dataset(ds: ray.data.Dataset, inf: InferenceSpec, backend: Callable, root: str,
                  model: ModelRef, options: dict, in_tasks: bool = False) -> Iterator[ray.data.Dataset]:
    """`ds` mapped by `backend`, to be consumed inside the `with` block: on `engines_per_model`
    engine hosts leased for the block, or in as many concurrent tasks on warm workers that keep
    the model between stages. Rows need a `_row` column (an int) to spread batches over hosts."""
    init = {"backend": backend, "root": root, "source": model.source, "stored": model.stored,
            "torch_threads": inf.torch_threads, "dtype": inf.dtype, "options": options}
    if in_tasks:
        yield ds.map_batches(_map_in_process, fn_kwargs={**init, "model_id": model.id},
                             batch_size=inf.batch_size,
                             concurrency=inf.engines_per_model, num_cpus=inf.cpus_per_actor,
                             batch_format="numpy")
        return
    names = [engines.host_name(model.id, model.source, inf, options, i) for i in range(inf.engines_per_model)]
    spec = {"cpus": inf.cpus_per_actor, "gpus": inf.gpus_per_actor,
            "init": {**init, "gpus": inf.gpus_per_actor}}
    with engines.leased_hosts(engines.book(), model.id, names, spec, inf.engines_kept) as hosts:
        # The tasks only forward batches to the hosts, which hold the stage's CPUs and GPUs.
        yield ds.map_batches(engines.call_host, fn_kwargs={"hosts": hosts}, batch_size=inf.batch_size,
                             concurrency=len(hosts), num_cpus=0, batch_format="numpy")


def stage_inference(ctx: StageContext, model: ModelRef) -> InferenceSpec:
    """The stage's inference layout; with `inference.plan`, the row of the model's size."""
    inf = ctx.config.inference
    if not inf.plan or model.rung is None:
        return inf
    size = resources.size_of(ctx.config.ladder.rung(model.rung))
    return resources.inference_spec(inf, size) if size else inf


def map_with_model(ctx: StageContext, model: ModelRef, df: pd.DataFrame, backends: dict[str, Callable],
                   outputs: list[str], max_tokens: int, options: dict | None = None
                   ) -> tuple[pd.DataFrame, dict]:
    """`df` with the `outputs` columns of the backend `inference.backend` picks among `backends`
    (constructed with `options` too), through Ray Data (`model_dataset`), row order kept; also what ran it: the summed compute seconds, the backend and the
    reason for it. No row needs more than `max_tokens` tokens of context."""
    inf = stage_inference(ctx, model)
    backend, why = choose_backend(inf, model_params(ctx.store, model), len(df))
    rows = df.reset_index(drop=True).assign(_row=lambda d: range(len(d)))
    sent = rows[["_row", *(c for c in INPUTS if c in rows.columns)]]
    with model_dataset(ray.data.from_pandas(sent), inf, backends[backend], ctx.store.root, model,
                       {**engine_options(inf, backend, max_tokens), **(options or {})},
                       in_tasks=in_worker_tasks(inf, backend)) as ds:
        out = ds.to_pandas()[["_row", *outputs, "compute_seconds"]]
    compute = float(out.pop("compute_seconds").sum())
    merged = rows.merge(out, on="_row").sort_values("_row").drop(columns="_row")
    return merged.reset_index(drop=True), {"compute_seconds": compute, "backend": backend,
                                           "backend_reason": why}


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
    out, ran = map_with_model(ctx, model, sent, BACKENDS, ["completion"], max_generation_tokens(sent))
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
    inf = stage_inference(ctx, model)
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
