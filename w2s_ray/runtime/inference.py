"""How a model maps a table's rows through Ray Data: on engine hosts that keep a model's engine
between its stages (vLLM, GPUs; `engines.py`), or in tasks on warm Ray workers that keep the
model between stages (transformers on CPU)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import pandas as pd
import ray

from w2s_ray.artifacts import Store
from w2s_ray.config import InferenceSpec
from w2s_ray.models import speed
from w2s_ray.models.location import ModelLocation, ModelRef
from w2s_ray.runtime import engines
from w2s_ray.runtime.backends import (
    INPUTS,
    TransformersBackend,
    TransformersLogProbs,
    TransformersScorer,
)
from w2s_ray.runtime.choose import choose_backend, model_params


def engine_options(inf: InferenceSpec, backend: str, max_tokens: int) -> dict:
    """What a backend needs beyond (path, threads, dtype): vLLM its engine layout, the most
    tokens one sequence of the stage can need and whether its host decodes several batches at
    once, transformers the device (an actor that holds GPUs decodes on them)."""
    if backend != "vllm":
        return {"device": "cuda" if inf.gpus_per_actor else "cpu"}
    return {"tensor_parallel_size": inf.tensor_parallel_size, "max_num_seqs": inf.concurrency,
            "max_model_len": max_tokens, "enforce_eager": inf.enforce_eager,
            "asynchronous": inf.batches_in_flight > 1}


def max_generation_tokens(df: pd.DataFrame) -> int:
    """An upper bound on prompt + output tokens of any row, before any tokenizer is loaded: a
    token covers at least one UTF-8 byte, plus a BOS."""
    return int((df["prompt"].str.encode("utf-8").str.len() + 1 + df["max_new_tokens"]).max())


@functools.lru_cache(maxsize=2)
def _process_model(backend: Callable, location: ModelLocation, torch_threads: int,
                   dtype: str, options: tuple, model_id: str) -> Callable:
    """A model kept by a Ray worker process between stages: the weak and the strong model of a
    pair alternate, so two are kept."""
    counted = engines.existing_book()
    if counted is not None:
        counted.loaded.remote(model_id)
    return backend(location.local(), torch_threads, dtype, **dict(options))


def _map_in_process(batch, backend: Callable, location: ModelLocation, torch_threads: int,
                    dtype: str, options: dict, model_id: str):
    return _process_model(backend, location, torch_threads, dtype,
                          tuple(sorted(options.items())), model_id)(batch)


def in_worker_tasks(inf: InferenceSpec, backend: str) -> bool:
    """Whether a stage maps its rows in Ray tasks that reuse warm worker processes and their
    loaded models (transformers on CPU, where a load takes milliseconds) rather than on engine
    hosts (vLLM engines, GPUs). A host costs a new process with its imports once per model (~6 s
    on 2 cores, against ~0.4 s per stage on a warm worker: benchmarks/overhead.py) and holds its
    resources between stages, which only pays where the engine itself is slow to start."""
    return backend == "transformers" and not inf.gpus_per_actor


@contextlib.contextmanager
def model_dataset(ds: ray.data.Dataset, inf: InferenceSpec, backend: Callable, location: ModelLocation,
                  model_id: str, options: dict, in_tasks: bool = False) -> Iterator[ray.data.Dataset]:
    """`ds` mapped by `backend`, to be consumed inside the `with` block: on `engines_per_model`
    engine hosts leased for the block, or in as many concurrent tasks on warm workers that keep
    the model between stages. Rows need a `_row` column (an int) to spread batches over hosts."""
    init = {"backend": backend, "location": location, "torch_threads": inf.torch_threads,
            "dtype": inf.dtype, "options": options}
    if in_tasks:
        yield ds.map_batches(_map_in_process, fn_kwargs={**init, "model_id": model_id},
                             batch_size=inf.batch_size,
                             concurrency=inf.engines_per_model, num_cpus=inf.cpus_per_actor,
                             batch_format="numpy")
        return
    names = [engines.host_name(model_id, location.path, inf, options, i) for i in range(inf.engines_per_model)]
    spec = {"cpus": inf.cpus_per_actor, "gpus": inf.gpus_per_actor,
            "init": {**init, "gpus": inf.gpus_per_actor}}
    with engines.leased_hosts(engines.book(), model_id, names, spec, inf.engines_kept) as hosts:
        # The tasks only forward batches to the hosts, which hold the stage's CPUs and GPUs; each
        # host has `batches_in_flight` of them at once (an asynchronous engine decodes them
        # together). A task maps its block's batches one after another, so one batch per block.
        ds = ds.repartition(target_num_rows_per_block=inf.batch_size)
        yield ds.map_batches(engines.call_host, fn_kwargs={"hosts": hosts}, batch_size=inf.batch_size,
                             concurrency=len(hosts) * inf.batches_in_flight, num_cpus=0, batch_format="numpy")


def map_with_model(inf: InferenceSpec, store: Store, model: ModelRef, df: pd.DataFrame,
                   backends: dict[str, Callable], outputs: list[str], max_tokens: int,
                   options: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """`df` with the `outputs` columns of the backend `inference.backend` picks among `backends`
    (constructed with `options` too), through Ray Data (`model_dataset`), row order kept; also what ran it: the summed compute seconds, the backend and the
    reason for it. No row needs more than `max_tokens` tokens of context."""
    backend, why = choose_backend(inf, model_params(store, model), len(df))
    rows = df.reset_index(drop=True).assign(_row=lambda d: range(len(d)))
    sent = rows[["_row", *(c for c in INPUTS if c in rows.columns)]]
    with model_dataset(ray.data.from_pandas(sent), inf, backends[backend], model.at(store.root), model.id,
                       {**engine_options(inf, backend, max_tokens), **(options or {})},
                       in_tasks=in_worker_tasks(inf, backend)) as ds:
        out = ds.to_pandas()
    compute = float(out.pop("compute_seconds").sum())
    counted = {c: int(out.pop(c).sum()) if c in out else None for c in ("prompt_tokens", "generated_tokens")}
    merged = rows.merge(out[["_row", *outputs]], on="_row").sort_values("_row").drop(columns="_row")
    ran = speed.measured("generation" if "completion" in outputs else "scoring", model.rung,
                            model_params(store, model), card(inf), inf.gpus_per_actor or 1, compute,
                            len(df), **counted)
    return merged.reset_index(drop=True), {"compute_seconds": compute, "backend": backend,
                                           "backend_reason": why, "throughput": ran}


def card(inf: InferenceSpec) -> str:
    """The device an inference stage ran on: "cpu", or the cluster's GPU type as Ray labels its
    nodes (`accelerator_type:A100`); "gpu" where the cluster mixes types or names none."""
    if not inf.gpus_per_actor:
        return "cpu"
    kinds = {k.split(":", 1)[1] for k in ray.cluster_resources() if k.startswith("accelerator_type:")}
    return kinds.pop() if len(kinds) == 1 else "gpu"


def vllm_backend(*args, asynchronous: bool = False, **kwargs):
    from w2s_ray.runtime.vllm_backend import AsyncVLLMBackend, VLLMBackend

    return (AsyncVLLMBackend if asynchronous else VLLMBackend)(*args, **kwargs)


def vllm_scorer(*args, asynchronous: bool = False, **kwargs):
    """Scoring is prefill only, with no answers of varied length to wait on: synchronous."""
    from w2s_ray.runtime.vllm_backend import VLLMScorer

    return VLLMScorer(*args, **kwargs)


def vllm_logprob(*args, **kwargs):
    from w2s_ray.runtime.vllm_backend import VLLMLogProb

    return VLLMLogProb(*args, **kwargs)


#: generators, scorers and log-probability passes by `inference.backend` name (vLLM, an optional
#: extra, imported on use)
BACKENDS = {"transformers": TransformersBackend, "vllm": vllm_backend}
SCORERS = {"transformers": TransformersScorer, "vllm": vllm_scorer}
#: answers' log-probabilities (`logp`) and their mean per token (`confidence`); vLLM gives the
#: latter alone, and `stages/logprobs.py` says why DPO's reference never runs there
LOGPROBS = {"transformers": TransformersLogProbs, "vllm": vllm_logprob}
