"""vLLM behind the backends' interface: Ray Data actor classes, each holding one `vllm.LLM`.

Why our own `map_batches` actor rather than `ray.data.llm`'s processor: measured on this machine
type (benchmarks/generate.py; docs/benchmarks.md), the processor needs five workarounds on CPU (a CPU
placement bundle, no engine metrics, fractional CPUs for its four side stages, no chat-template
stage), took ~88 s for 256 rows, and tokenizes with the model folder's tokenizer, which for a
tiny-ladder checkpoint is the wrong one (transformers 5 builds a byte-level BPE for any `qwen2`
folder; ours lives in `tokenizer/`). The actor below needs none of that, feeds vLLM the exact
token ids the transformers backend feeds its model (outputs identical on 2,000 of 2,000 prompts
for t1 and t4), and through Ray Data keeps 1.0-1.07 of the engine's own steady-state rate
(`benchmarks/generate.py`, docs/benchmarks.md "vLLM backend"), so there is no wrapper cost left for the
processor to win back here (and Ray 2.60's `ray.data.llm` pins vLLM 0.29 against our 0.32). Its
asynchronous engine is here too (`AsyncVLLMBackend`: an engine host's batches in flight decoded
together); its separate tokenize/detokenize actors could join behind this interface.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from w2s_ray.models.tokenizer import load_tokenizer, prompt_ids, tokenizer_path
from w2s_ray.runtime import compile_cache
from w2s_ray.runtime.backends import TransformersScorer, cut_at_stop, stops_of

log = logging.getLogger(__name__)


def engine_scratch() -> str:
    """A private folder for vLLM's IPC sockets and temp files, removed at exit.

    vLLM writes to /tmp by default; its engine process inherits the environment, so setting it
    before the engine starts keeps them inside this folder. Its compile caches are kept per node
    instead (`compile_cache`).
    """
    scratch = tempfile.mkdtemp(prefix="w2s-vllm-")
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = None  # re-read TMPDIR
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def engine_args(path: str, dtype: str, tensor_parallel_size: int, max_num_seqs: int,
                max_model_len: int | None, enforce_eager: bool | None = None, **kwargs) -> dict:
    """The engine's arguments, its tokenizer from `tokenizer/`.

    `max_model_len` bounds the tokens of one sequence the stage can need; vLLM would otherwise
    reserve the model's whole context (Qwen1.5: 32K) per sequence and fit fewer in its KV cache.
    """
    import torch

    if max_model_len is not None:
        context = json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")
        kwargs["max_model_len"] = min(max_model_len, context or max_model_len)
    if torch.cuda.is_available():
        kwargs["tensor_parallel_size"] = tensor_parallel_size
    else:
        # CPU: the KV cache is sized by this variable (default 4 GiB per engine; 1 is ample for
        # the tiny ladder).
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # Unset: eager on CPU, where compiling costs more than it saves (docs/benchmarks.md).
    kwargs["enforce_eager"] = not torch.cuda.is_available() if enforce_eager is None else enforce_eager
    engine_scratch()
    compile_cache.use_compile_cache(path, dtype, tensor_parallel_size)
    return {"model": path, "tokenizer": tokenizer_path(path), "dtype": dtype, "seed": 0,
            "max_num_seqs": max_num_seqs, **kwargs}


def start_engine(path: str, dtype: str, tensor_parallel_size: int, max_num_seqs: int,
                 max_model_len: int | None, enforce_eager: bool | None = None, **kwargs):
    """One `vllm.LLM` on `path` (see `engine_args`), stopped at interpreter exit."""
    from vllm import LLM

    args = engine_args(path, dtype, tensor_parallel_size, max_num_seqs, max_model_len, enforce_eager, **kwargs)
    llm = LLM(**args)
    compile_cache.touch(Path(os.environ["VLLM_CACHE_ROOT"]))
    # Ray Data ends its actors at the end of a stage; stop the engine process with them.
    atexit.register(llm.llm_engine.engine_core.shutdown)
    return llm


def start_async_engine(path: str, dtype: str, tensor_parallel_size: int, max_num_seqs: int,
                       max_model_len: int | None, enforce_eager: bool | None = None):
    """One `AsyncLLM` on `path` (see `engine_args`), stopped at interpreter exit."""
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = engine_args(path, dtype, tensor_parallel_size, max_num_seqs, max_model_len, enforce_eager)
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args, disable_log_stats=True))
    compile_cache.touch(Path(os.environ["VLLM_CACHE_ROOT"]))
    atexit.register(engine.shutdown)
    return engine


class VLLMBackend:
    """Greedy generation with one vLLM engine; each row gets its own budget and stop string, and
    a row with `temperature` and `sample_seed` is sampled with that per-request seed."""

    def __init__(self, path: str, torch_threads: int, dtype: str, tensor_parallel_size: int = 1,
                 max_num_seqs: int = 256, max_model_len: int | None = None, enforce_eager: bool | None = None):
        # Our own tokenizer encodes, so prompts are the token ids the transformers backend feeds;
        # vLLM uses the same tokenizer only to detokenize and match stop strings.
        self.tok = load_tokenizer(path)
        self.llm = start_engine(path, dtype, tensor_parallel_size, max_num_seqs, max_model_len, enforce_eager)

    def requests(self, batch: dict[str, np.ndarray]) -> tuple[list, list]:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        prompts = [TokensPrompt(prompt_token_ids=prompt_ids(self.tok, p)) for p in batch["prompt"]]
        rows = len(batch["prompt"])
        sampled = [{"temperature": float(t), "seed": int(seed)} for t, seed in
                   zip(batch["temperature"], batch["sample_seed"])] if "sample_seed" in batch else [
                       {"temperature": 0.0}] * rows
        params = [SamplingParams(max_tokens=int(n), stop=[s] if s else None, include_stop_str_in_output=True,
                                 skip_special_tokens=True, output_kind=RequestOutputKind.FINAL_ONLY, **how)
                  for n, s, how in zip(batch["max_new_tokens"], stops_of(batch), sampled)]
        return prompts, params

    def completed(self, batch: dict[str, np.ndarray], outs: list, start: float) -> dict[str, np.ndarray]:
        # vLLM's own text is detokenized in the prompt's context, which for a word-level
        # tokenizer adds a leading space; decoding the new tokens alone and cutting at the stop
        # string is exactly what the transformers backend does.
        texts = self.tok.batch_decode([o.outputs[0].token_ids for o in outs], skip_special_tokens=True)
        batch["completion"] = np.array([cut_at_stop(t, s) for t, s in zip(texts, stops_of(batch))],
                                       dtype=object)
        batch["prompt_tokens"] = np.array([len(o.prompt_token_ids) for o in outs])
        batch["generated_tokens"] = np.array([len(o.outputs[0].token_ids) for o in outs])
        batch["compute_seconds"] = np.full(len(outs), (time.perf_counter() - start) / len(outs))
        return batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outs = self.llm.generate(*self.requests(batch), use_tqdm=False)
        return self.completed(batch, outs, start)


class AsyncVLLMBackend(VLLMBackend):
    """`VLLMBackend` on vLLM's asynchronous engine: the batches an engine host has in flight are
    decoded together, a new batch's rows joining as earlier ones finish (continuous batching),
    so the engine does not idle while one batch's longest answers finish."""

    def __init__(self, path: str, torch_threads: int, dtype: str, tensor_parallel_size: int = 1,
                 max_num_seqs: int = 256, max_model_len: int | None = None, enforce_eager: bool | None = None):
        self.tok = load_tokenizer(path)
        self.engine = start_async_engine(path, dtype, tensor_parallel_size, max_num_seqs, max_model_len,
                                         enforce_eager)

    async def _final(self, prompt, params):
        async for out in self.engine.generate(prompt, params, request_id=uuid.uuid4().hex):
            final = out  # FINAL_ONLY: one output, when the request finishes
        return final

    async def generate(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outs = await asyncio.gather(*(self._final(p, s) for p, s in zip(*self.requests(batch))))
        return self.completed(batch, outs, start)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise TypeError("AsyncVLLMBackend decodes inside an event loop: await its generate(batch)")


def vllm_serves(path: str) -> tuple[bool, str]:
    """Whether vLLM runs this checkpoint's architecture, directly or by its conversion of a
    `*ForSequenceClassification` head onto the family's causal model."""
    from vllm import ModelRegistry

    archs = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    known = ModelRegistry.get_supported_archs()
    ok = [a for a in archs if a in known or a.replace("ForSequenceClassification", "ForCausalLM") in known]
    return bool(ok), f"architectures {archs}: {'served' if ok else 'not served'} by vLLM's pooling runner"


class VLLMScorer:
    """The reward model through vLLM's pooling runner (`LLM.classify`): p(good) = softmax[:, 1].

    Falls back to the transformers scorer, with a logged reason, when vLLM does not serve the
    checkpoint's architecture.
    """

    def __init__(self, path: str, torch_threads: int, dtype: str, max_length: int,
                 tensor_parallel_size: int = 1, max_num_seqs: int = 256, max_model_len: int | None = None,
                 enforce_eager: bool | None = None):
        from w2s_ray.runtime.encoding import encode_pairs

        served, why = vllm_serves(path)
        log.warning("reward scoring through %s: %s", "vLLM" if served else "transformers", why)
        self.fallback = None
        if not served:
            import torch

            # The actor holds GPUs exactly when vLLM would have run on them.
            self.fallback = TransformersScorer(path, torch_threads, dtype, max_length,
                                               "cuda" if torch.cuda.is_available() else "cpu")
            return
        self.encode = functools.partial(encode_pairs, max_length=max_length)
        self.tok = load_tokenizer(path)
        self.llm = start_engine(path, dtype, tensor_parallel_size, max_num_seqs, max_model_len, enforce_eager,
                               runner="pooling")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fallback is not None:
            return self.fallback(batch)
        from vllm import TokensPrompt

        start = time.perf_counter()
        # The transformers scorer's encoding (BOS + prompt + label, start cut when too long),
        # without its padding.
        enc = self.encode(self.tok, list(batch["prompt"]), list(batch["label_text"]))
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        outs = self.llm.classify([TokensPrompt(prompt_token_ids=r) for r in rows], use_tqdm=False)
        batch["score"] = np.array([o.outputs.probs[1] for o in outs], dtype=np.float32)
        batch["compute_seconds"] = np.full(len(outs), (time.perf_counter() - start) / len(outs))
        return batch


class VLLMLogProb:
    """The mean log-probability per label token (and EOS) through vLLM's prompt log-probs: the
    rows `encoding.encode` makes for training, unpadded, each scored as a prompt."""

    def __init__(self, path: str, torch_threads: int, dtype: str, max_length: int,
                 tensor_parallel_size: int = 1, max_num_seqs: int = 256, max_model_len: int | None = None):
        from w2s_ray.runtime.encoding import encode

        self.encode = functools.partial(encode, max_length=max_length)
        self.tok = load_tokenizer(path)
        self.llm = start_engine(path, dtype, tensor_parallel_size, max_num_seqs, max_model_len)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vllm import SamplingParams, TokensPrompt

        start = time.perf_counter()
        enc = self.encode(self.tok, list(batch["prompt"]), list(batch["label_text"]))
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows],
                                 SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)
        means = []
        for out, ids, labels in zip(outs, rows, enc["labels"]):
            # prompt_logprobs[t] holds token t's log-probability given the tokens before it
            scored = [t for t in range(1, len(ids)) if labels[t] != -100]
            means.append(sum(out.prompt_logprobs[t][ids[t]].logprob for t in scored) / max(1, len(scored)))
        batch["confidence"] = np.array(means, dtype=np.float64)
        batch["compute_seconds"] = np.full(len(outs), (time.perf_counter() - start) / len(outs))
        return batch
