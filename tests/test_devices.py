"""Inference on GPU actors runs on the GPU, or refuses to start: each checked on what this machine
has (the refusal on a torch that sees no CUDA device, the placement where one is seen)."""

import numpy as np
import pandas as pd
import pytest
import torch

from w2s_ray.config import InferenceSpec
from w2s_ray.models.location import ModelLocation
from w2s_ray.runtime.backends import TransformersBackend
from w2s_ray.runtime.engines import EngineHost, GPUUnavailable
from w2s_ray.runtime.inference import engine_options, max_generation_tokens


def test_an_engine_host_holding_gpus_refuses_to_decode_on_cpu_before_loading_anything(monkeypatch):
    # What a CPU build of torch on a GPU node reports; on a machine without CUDA, what it reports anyway.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GPUUnavailable, match="gpus_per_actor=1.0 .* would decode on CPU"):
        EngineHost(TransformersBackend, ModelLocation("/", "/no/such/model"), torch_threads=1,
                   dtype="float32", options={}, gpus=1.0)


def test_transformers_backends_are_placed_on_the_actors_device():
    gpu, cpu = InferenceSpec(gpus_per_actor=1), InferenceSpec()
    assert engine_options(gpu, "transformers", 64) == {"device": "cuda"}
    assert engine_options(cpu, "transformers", 64) == {"device": "cpu"}
    assert engine_options(gpu, "vllm", 64)["max_model_len"] == 64


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="this machine's torch sees no CUDA device, so nothing can be placed on one; "
                           "the refusal test covers this case")
def test_a_stage_on_gpu_actors_decodes_on_the_gpu(ray_local, tiny_checkpoint):
    import ray

    from w2s_ray.runtime import engines
    from w2s_ray.runtime.inference import model_dataset

    class Placed(TransformersBackend):
        def __call__(self, batch):
            return super().__call__(batch) | {"device": np.full(len(batch["prompt"]), str(self.model.device))}

    inf = InferenceSpec(gpus_per_actor=1, cpus_per_actor=0.5, batch_size=4)
    df = pd.DataFrame({"prompt": ["to dazal twice , do"] * 8, "max_new_tokens": 4, "stop": "", "_row": range(8)})
    with model_dataset(ray.data.from_pandas(df), inf, Placed, ModelLocation("/", tiny_checkpoint), "base:test",
                       engine_options(inf, "transformers", 64), in_tasks=False) as ds:
        out = ds.to_pandas()
    ray.get(engines.book().release_idle.remote())  # the GPU back for the tests after this one
    assert len(out) == len(df) and set(out["device"]) == {"cuda:0"}, set(out["device"])


def test_vllm_context_bound_covers_every_prompt_and_budget_at_one_token_per_byte():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # The worst case of a byte-level BPE: no merges, so every UTF-8 byte is a token.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    df = pd.DataFrame({"prompt": ["Question: 7 × 8 = ?\nAnswer:", "é" * 30], "max_new_tokens": [16, 4]})
    needed = [len(tok(p)["input_ids"]) + 1 + n for p, n in zip(df["prompt"], df["max_new_tokens"])]
    assert needed[1] == 30 * 2 + 1 + 4
    assert max_generation_tokens(df) == max(needed)


def test_warm_worker_tasks_give_the_engine_hosts_outputs(ray_local):
    import ray

    from w2s_ray.ladder import recipe as ladder_recipe
    from w2s_ray.ladder import tiny_ladder
    from w2s_ray.models.location import ModelRef
    from w2s_ray.runtime.inference import in_worker_tasks, model_dataset

    inf = InferenceSpec(batch_size=8, cpus_per_actor=0.5)
    assert in_worker_tasks(inf, "transformers") and not in_worker_tasks(inf, "vllm")
    assert not in_worker_tasks(InferenceSpec(gpus_per_actor=1), "transformers")
    prompts = [f"to dazal {w} , do" for w in ("", "twice", "left", "thrice", "right twice")] * 5
    df = pd.DataFrame({"prompt": prompts, "max_new_tokens": 6, "stop": ""}).assign(_row=range(len(prompts)))
    tiny_ladder.build_ladder(["t1"])
    model = ModelRef(id="base:t1", source=str(ladder_recipe.rung_path("t1")))
    runs = []
    for tasks in (False, True, True):
        with model_dataset(ray.data.from_pandas(df), inf, TransformersBackend, model.at("/"), model.id, {"device": "cpu"},
                           in_tasks=tasks) as ds:
            runs.append(ds.to_pandas().sort_values("_row")["completion"].tolist())
    assert runs[0] == runs[1] == runs[2]
    assert len(set(runs[0])) > 1
