"""vLLM against transformers for generation, raw and through the Ray Data stage, in one run;
vLLM's warm engine start and an engine host's batches in flight.

    python benchmarks/generate.py                  # t1 and t4, 2,000 mixed prompts; every part
    python benchmarks/generate.py --rungs t1 --rows 400
    python benchmarks/generate.py --rungs t1 --parts warm-start in-flight

For each tiny rung, the same prompts (an equal share of every capability, half test and half
unlabeled split, each with its capability's budget and stop string) go through:
- each backend called directly: end to end (model load / engine start + one pass) and the
  steady-state generated tokens/s of a second pass (transformers batched, left-padded, KV cache);
- each backend inside the Ray Data generation stage (`model_dataset`, on an engine host started
  for it): end to end including the actor's start, and its steady-state rate from the start of
  its first batch to the end of its last, so the wrapper's own cost (batching, scheduling,
  serialization) shows against the raw rate.

warm-start: vLLM engine starts of one model in fresh processes with the node's compile cache
(`runtime/compile_cache.py`) emptied first; prints the second start / the first, compiled (an
eager engine has nothing to cache).
in-flight: the vLLM stage on an engine host with one synchronous batch at a time
(`inference.batches_in_flight: 1`, today's host) and with several batches decoded together by
the asynchronous engine, side by side on the same prompts and batch size; each timed on a
second pass over its kept host (engine start excluded); prints tokens/s of the new host / the
old and whether their outputs are identical.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import time

import numpy as np
import pandas as pd
import ray

from w2s_ray.artifacts import cache_dir
from w2s_ray.capabilities import registry
from w2s_ray.config import InferenceSpec
from w2s_ray.ladder import recipe as ladder_recipe
from w2s_ray.ladder import tiny_ladder
from w2s_ray.models.location import ModelRef
from w2s_ray.models.tokenizer import load_tokenizer
from w2s_ray.runtime import compile_cache, engines
from w2s_ray.runtime.inference import BACKENDS, engine_options, max_generation_tokens, model_dataset

HUB = "w2s_ray.capabilities.hub"


def mixed_prompts(rows: int) -> pd.DataFrame:
    # The generated capabilities (the tiny ladder's); the loaded ones have no generator.
    generated = [n for n in registry.names() if not type(registry.get(n)).__module__.startswith(HUB)]
    per_split = rows // (2 * len(generated))
    frames = []
    for name in generated:
        cap = registry.get(name)
        for split in ("test", "unlabeled"):
            items = cap.examples(random.Random(f"bench:{name}:{split}"), per_split, split)
            frames.append(pd.DataFrame({"prompt": [e.prompt for e in items], "capability": name,
                                        "max_new_tokens": cap.max_new_tokens, "stop": cap.stop}))
    # The stage's order: by capability, then prompt length.
    df = pd.concat(frames, ignore_index=True)
    return df.assign(_len=df["prompt"].str.len()).sort_values(["capability", "_len"]).drop(columns="_len")


def as_batch(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: df[c].to_numpy(dtype=object if df[c].dtype == object else None) for c in df.columns}


def raw(backend: str, path: str, df: pd.DataFrame, inf: InferenceSpec) -> tuple[float, float, list[str]]:
    """(end-to-end seconds of load + one pass, seconds of a second pass, completions)."""
    # vLLM schedules continuously within one call; transformers runs the stage's batch size.
    step = len(df) if backend == "vllm" else inf.batch_size

    def one_pass() -> list[str]:
        out = []
        for i in range(0, len(df), step):
            out += list(impl(as_batch(df.iloc[i : i + step]))["completion"])
        return out

    start = time.perf_counter()
    impl = BACKENDS[backend](path, inf.torch_threads, inf.dtype, **engine_options(inf, backend, max_generation_tokens(df)))
    completions = one_pass()
    end_to_end = time.perf_counter() - start
    start = time.perf_counter()
    assert one_pass() == completions, "greedy decoding must repeat itself"
    steady = time.perf_counter() - start
    if backend == "vllm":
        impl.llm.llm_engine.engine_core.shutdown()
    return end_to_end, steady, completions


class Stamped:
    """A backend that also records when the actor began its first batch (its start excluded)."""

    def __init__(self, path: str, torch_threads: int, dtype: str, inner: str, **options):
        self.impl = BACKENDS[inner](path, torch_threads, dtype, **options)
        self.first_started = None

    def __call__(self, batch):
        self.first_started = self.first_started or time.time()
        out = self.impl(batch)
        out["first_started"] = np.full(len(out["completion"]), self.first_started)
        out["done_at"] = np.full(len(out["completion"]), time.time())
        return out


def through_ray_data(backend: str, path: str, df: pd.DataFrame, inf: InferenceSpec
                     ) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    with model_dataset(ray.data.from_pandas(df.assign(_row=range(len(df)))), inf, Stamped,
                       location=ModelRef("bench", path).at("/"), model_id="bench",
                       options={"inner": backend, **engine_options(inf, backend, max_generation_tokens(df))}) as ds:
        out = ds.to_pandas().sort_values("_row").drop(columns="_row")
    return time.perf_counter() - start, out


def steady_rate(out: pd.DataFrame, count) -> float:
    """Tokens/s of every row, from the first batch's start to the last batch's end: the same
    rows as the raw pass, and everything the wrapper adds except the actor's start."""
    return count(out["completion"]) / (out["done_at"].max() - out["first_started"].min())


def bench_rung(rung: str, df: pd.DataFrame, specs: dict[str, InferenceSpec]) -> list[dict]:
    path = str(ladder_recipe.rung_path(rung))
    tok = load_tokenizer(path)

    def count(texts) -> int:
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    rows, outputs = [], {}
    for backend, inf in specs.items():
        e2e, steady, outputs[backend] = raw(backend, path, df, inf)
        tokens = count(outputs[backend])
        stage_e2e, stage_out = through_ray_data(backend, path, df, inf)
        rows.append({"rung": rung, "backend": backend, "tokens": tokens,
                     "raw tok/s": tokens / steady, "raw e2e s": e2e,
                     "stage tok/s": steady_rate(stage_out, count), "stage e2e s": stage_e2e})
    same = np.mean([a == b for a, b in zip(outputs["vllm"], outputs["transformers"])])
    for r in rows:
        r["stage/raw"] = r["stage tok/s"] / r["raw tok/s"]
        r["vllm/tf raw"] = rows[0]["raw tok/s"] / rows[1]["raw tok/s"]
        r["same output"] = same
    return rows


def _start_engine(path: str, enforce_eager: bool, max_tokens: int, seconds) -> None:
    from vllm import LLM  # noqa: F401  (imported before the clock: every start in a process pays it once)

    from w2s_ray.runtime.vllm_backend import start_engine

    start = time.perf_counter()
    llm = start_engine(path, "float32", 1, 256, max_tokens, enforce_eager)
    seconds.value = time.perf_counter() - start
    llm.llm_engine.engine_core.shutdown()


def engine_start(path: str, enforce_eager: bool, max_tokens: int) -> float:
    """Seconds of one engine start in a fresh process (vLLM imported before the clock starts)."""
    context = multiprocessing.get_context("spawn")
    seconds = context.Value("d", float("nan"))
    proc = context.Process(target=_start_engine, args=(path, enforce_eager, max_tokens, seconds))
    proc.start()
    proc.join()
    return seconds.value


def warm_start(rung: str, df: pd.DataFrame) -> list[dict]:
    path = str(ladder_recipe.rung_path(rung))
    shutil.rmtree(cache_dir() / compile_cache.FOLDER, ignore_errors=True)
    # Compiled (enforce_eager off): an eager engine has nothing to cache.
    first, second = (engine_start(path, False, max_generation_tokens(df)) for _ in range(2))
    return [{"rung": rung, "first start s": first, "second start s": second, "second/first": second / first}]


def timed_stage(path: str, df: pd.DataFrame, inf: InferenceSpec) -> tuple[float, list[str]]:
    """Seconds of the stage's second pass (its host kept from the first) and its completions."""
    options = engine_options(inf, "vllm", max_generation_tokens(df))
    rows = ray.data.from_pandas(df.assign(_row=range(len(df))))
    for _ in range(2):
        start = time.perf_counter()
        with model_dataset(rows, inf, BACKENDS["vllm"], ModelRef("bench", path).at("/"), "bench", options) as ds:
            out = ds.to_pandas().sort_values("_row")
        seconds = time.perf_counter() - start
    return seconds, list(out["completion"])


def in_flight(rung: str, df: pd.DataFrame, batch_size: int, batches: int) -> list[dict]:
    path = str(ladder_recipe.rung_path(rung))
    tok = load_tokenizer(path)
    rows, outputs = [], {}
    for n in (1, batches):
        inf = InferenceSpec(backend="vllm", batch_size=batch_size, batches_in_flight=n, engines_kept=1)
        seconds, outputs[n] = timed_stage(path, df, inf)
        tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in outputs[n])
        rows.append({"rung": rung, "batch size": batch_size, "batches in flight": n, "tokens": tokens,
                     "stage s": seconds, "tok/s": tokens / seconds})
        ray.get(engines.book().release_idle.remote())
    for r in rows:
        r["tok/s vs 1 in flight"] = r["tok/s"] / rows[0]["tok/s"]
        r["same output"] = outputs[r["batches in flight"]] == outputs[1]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", nargs="+", default=["t1", "t4"])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128, help="transformers rows per batch")
    parser.add_argument("--vllm-batch-size", type=int, default=512, help="vLLM rows per Ray Data batch")
    parser.add_argument("--parts", nargs="+", default=["backends", "warm-start", "in-flight"],
                        choices=["backends", "warm-start", "in-flight"])
    parser.add_argument("--flight-batch-size", type=int, default=InferenceSpec().batch_size,
                        help="rows per Ray Data batch of the in-flight comparison (default: the config's)")
    parser.add_argument("--batches-in-flight", type=int, default=InferenceSpec().batches_in_flight)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tiny_ladder.build_ladder(args.rungs)
    df = mixed_prompts(args.rows)
    if "backends" in args.parts:
        # Today's synchronous host: the raw pass calls the backend directly.
        specs = {"vllm": InferenceSpec(backend="vllm", batch_size=args.vllm_batch_size, batches_in_flight=1),
                 "transformers": InferenceSpec(backend="transformers", batch_size=args.batch_size)}
        table = pd.DataFrame([r for rung in args.rungs for r in bench_rung(rung, df, specs)])
        print(f"\n{len(df)} mixed prompts; steady state: a second pass (raw), from the first batch (stage)")
        print(table.to_markdown(index=False, floatfmt=".3g"))
    if "warm-start" in args.parts:
        table = pd.DataFrame([r for rung in args.rungs for r in warm_start(rung, df)])
        print("\nvLLM engine start of one model, twice, each in a fresh process, the compile cache emptied first")
        print(table.to_markdown(index=False, floatfmt=".3g"))
    if "in-flight" in args.parts:
        table = pd.DataFrame([r for rung in args.rungs
                              for r in in_flight(rung, df, args.flight_batch_size, args.batches_in_flight)])
        print(f"\n{len(df)} mixed prompts through the vLLM stage, side by side: 1 batch in flight (synchronous "
              "LLM.generate) vs several (AsyncLLM); second pass, engine start excluded")
        print(table.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
