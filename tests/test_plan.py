"""Resource plans from a model's architecture and the `--dry-run` report (no Ray, no downloads)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from w2s_ray.config import RungSpec, load_config, preset_names
from w2s_ray.models import layout, resources, rungs
from w2s_ray.models.resources import ARCHS, FIT_GB, PLANS, TrainPlan, train_memory_gb

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_PARAMS = {"0.5b": 0.62e9, "1.8b": 1.84e9, "4b": 3.95e9, "7b": 7.72e9, "14b": 14.2e9,
                    "32b": 32.5e9, "72b": 72.3e9}
# What the planner returns for the Qwen-1.5 configs (docs/memory.md says why 7B, 14B, 32B and 72B
# moved): workers, strategy, micro-batch, accumulation, activation checkpointing, vLLM TP.
QWEN15_ROWS = {"0.5b": (1, "ddp", 10, 4, False, 1), "1.8b": (1, "ddp", 5, 8, False, 1),
               "4b": (2, "fsdp", 4, 5, False, 1), "7b": (4, "fsdp", 2, 5, False, 1),
               "14b": (4, "fsdp", 1, 10, True, 1), "32b": (10, "fsdp", 4, 1, True, 2),
               "72b": (20, "fsdp", 2, 1, True, 4)}
# The model cards' counts and the configs' attention: (params, KV heads, tied embeddings).
QWEN25 = {"0.5B": (0.49e9, 2, True), "1.5B": (1.54e9, 2, True), "3B": (3.09e9, 2, True),
          "7B": (7.61e9, 4, False), "14B": (14.7e9, 8, False), "32B": (32.5e9, 8, False),
          "72B": (72.7e9, 8, False)}


def qwen25(size: str) -> resources.Arch:
    return resources.arch_of(rungs.carried_config(f"Qwen/Qwen2.5-{size}"))


@pytest.mark.parametrize("size", list(PLANS))
def test_every_plan_keeps_the_global_batch_and_fits_an_a100_80g(size):
    arch, plan = ARCHS[size], PLANS[size]
    assert arch.params == pytest.approx(PUBLISHED_PARAMS[size], rel=0.01)
    assert plan.train.workers * plan.train.micro_batch * plan.train.grad_accum == 40
    assert train_memory_gb(arch, plan.train)["total"] < FIT_GB
    infer = resources.infer_memory_gb(arch, plan.infer)
    assert infer["max_num_seqs"] >= 32, "the KV cache holds a useful batch of 1024-token sequences"
    assert arch.heads % plan.infer.tensor_parallel == 0 and arch.kv_heads % plan.infer.tensor_parallel == 0


@pytest.mark.parametrize("size", list(QWEN15_ROWS))
def test_the_qwen15_configs_give_their_rows_and_nothing_cheaper_fits(size):
    arch = resources.arch_of(rungs.carried_config(f"Qwen/Qwen1.5-{size.upper()}"))
    assert arch == ARCHS[size] and not arch.tied
    plan = resources.plan_for(arch)
    t = plan.train
    assert (t.workers, t.strategy, t.micro_batch, t.grad_accum, t.activation_checkpointing,
            plan.infer.tensor_parallel) == QWEN15_ROWS[size]
    # The rule: fewest GPUs, then no activation checkpointing, then the largest micro-batch.
    over = [TrainPlan(w, "ddp" if w == 1 else "fsdp", m, 40 // w // m, ckpt)
            for w in resources.divisors(40) for ckpt in (False, True) for m in resources.divisors(40 // w)
            if (w, ckpt, -m) < (t.workers, t.activation_checkpointing, -t.micro_batch)]
    assert all(train_memory_gb(arch, o)["total"] > FIT_GB for o in over)
    assert all(resources.infer_memory_gb(arch, resources.InferPlan(tp))["max_num_seqs"] < resources.MIN_INFER_SEQS
               for tp in resources.TENSOR_PARALLEL if tp < plan.infer.tensor_parallel)


@pytest.mark.parametrize("size", list(QWEN25))
def test_qwen25_configs_with_tied_embeddings_and_grouped_query_attention_get_a_plan_that_fits(size):
    params, kv_heads, tied = QWEN25[size]
    arch = qwen25(size)
    assert (arch.kv_heads, arch.tied) == (kv_heads, tied) and arch.kv_heads < arch.heads
    assert arch.params == pytest.approx(params, rel=0.01)
    plan = resources.plan_for(arch)
    assert plan.train.workers * plan.train.micro_batch * plan.train.grad_accum == 40
    assert train_memory_gb(arch, plan.train)["total"] <= FIT_GB
    tp = plan.infer.tensor_parallel
    assert arch.heads % tp == 0 and (arch.kv_heads % tp == 0 or tp % arch.kv_heads == 0)
    assert resources.infer_memory_gb(arch, plan.infer)["max_num_seqs"] >= resources.MIN_INFER_SEQS


def test_tied_embeddings_count_once():
    arch = qwen25("0.5B")
    untied = resources.Arch(arch.layers, arch.hidden, arch.heads, arch.kv_heads, arch.ffn, arch.vocab)
    assert untied.params - arch.params == arch.vocab * arch.hidden


def test_the_estimate_rejects_what_does_not_fit():
    assert train_memory_gb(ARCHS["72b"], TrainPlan(8, "fsdp", 1, 5, True))["total"] > 80
    # 20 GPUs: 58 GB of sharded states, and the gathered head with its gradients (10 GB) on top
    twenty = train_memory_gb(ARCHS["72b"], TrainPlan(20, "fsdp", 1, 2, True))
    assert twenty["total"] > FIT_GB and (twenty["head_gathered"] + twenty["reduce_buffers"]
                                               == pytest.approx(10.2, rel=0.01))
    assert train_memory_gb(ARCHS["7b"], TrainPlan(1, "ddp", 40, 1, False))["total"] > 80


def test_rungs_find_their_config_and_the_scale_preset_takes_its_plan():
    big = RungSpec(name="big", model="Qwen/Qwen1.5-72B")
    assert resources.arch_of(rungs.config(big)) == ARCHS["72b"]
    assert rungs.config(RungSpec(name="t1", model="tiny:t1")) is None
    assert rungs.config(RungSpec(name="x", model="acme/unknown-7b")) is None
    config = load_config("qwen15-scale")
    lay = layout.resolve(config, "72b")
    hp = lay.train
    assert lay.arch == ARCHS["72b"]
    assert (hp.num_workers, hp.strategy, hp.grad_accum, hp.mixed_precision) == (20, "fsdp", 1, "bf16")
    assert (hp.lr, hp.epochs) == (config.train.lr, config.train.epochs), "a plan keeps the recipe"
    # The layout follows the global batch and the length it trains at.
    t = resources.layout_of(resources.training_hparams(hp.model_copy(update={"batch_size": 32}), ARCHS["72b"]))
    assert t.workers * t.micro_batch * t.grad_accum == 32
    longer = resources.training_hparams(hp.model_copy(update={"max_length": 8192}), ARCHS["0.5b"])
    assert train_memory_gb(ARCHS["0.5b"], resources.layout_of(longer), 8192)["total"] <= FIT_GB


def with_rung(config, rung: RungSpec):
    return config.model_copy(update={"ladder": config.ladder.model_copy(update={"rungs": [rung]})})


def test_an_unknown_architecture_from_a_local_path_or_a_cached_snapshot_gets_a_plan(tmp_path, monkeypatch):
    # Llama-3-8B's shape: an architecture the project carries no config for.
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
             "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(llama))
    config = with_rung(load_config("qwen15-scale"), RungSpec(name="llama", model=str(folder)))
    lay = layout.resolve(config, "llama")
    assert lay.arch.params == pytest.approx(8.03e9, rel=0.01)
    t = resources.layout_of(lay.train)
    assert t.workers * t.micro_batch * t.grad_accum == 40 and lay.train.use_gpu
    assert train_memory_gb(lay.arch, t)["total"] <= FIT_GB
    assert lay.inference.tensor_parallel_size == 1 and lay.inference.concurrency >= resources.MIN_INFER_SEQS
    # A hub id's config.json from the Hugging Face cache's snapshot at its pinned revision.
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--acme--llama" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(llama))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    pinned = with_rung(config, RungSpec(name="llama", model="acme/llama", revision="abc123"))
    assert layout.resolve(pinned, "llama").arch == lay.arch
    # No config.json anywhere, or one the estimate cannot size: the config's own fields, no plan.
    (tmp_path / "empty").mkdir()
    for rung in (RungSpec(name="llama", model=str(tmp_path / "empty")),
                 RungSpec(name="llama", model="acme/llama", revision="other")):
        bare = layout.resolve(with_rung(config, rung), "llama")
        assert bare.arch is None and bare.train == config.train and bare.inference == config.inference
    assert resources.arch_of({**llama, "num_local_experts": 8}) is None


def test_dry_run_of_the_scale_grid_is_quick_and_dedup_beats_the_naive_grid(tmp_path):
    start = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), "--preset",
                           "qwen15-scale", "--dry-run", "--storage", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    assert time.time() - start < 120
    out = proc.stdout
    unique, naive_n = map(int, re.search(r"unique stages: (\d+) \(naive grid: (\d+)\)", out).groups())
    dedup = float(re.search(r"deduplicated grid: ([\d.]+)", out).group(1))
    naive = float(re.search(r"naive grid \(every .*\): ([\d.]+)", out).group(1))
    assert unique < naive_n and 0 < dedup < naive
    assert re.search(r"sft +wts +72b +todo +20 GPU fsdp mb2x1 ac +[\d.]+ +70\.4 +\S+$", out, re.MULTILINE)
    assert re.search(r"^splits .* CPU +0\.0 +- +-$", out, re.MULTILINE), "a CPU stage has no GPU estimate"
    assert re.search(r"generate +weak_labels +32b +todo +2 GPU vLLM tp2", out)
    assert not (tmp_path / "artifacts").exists(), "a dry run writes nothing"
    # One engine per model: its labels (or relabel) and its test evaluation share it.
    per_stage, stage_h, per_model, model_h = map(float, re.search(
        r"engine starts: one per inference stage (\d+) \(([\d.]+) GPU-h\); engine hosts, one per model "
        r"(\d+) \(([\d.]+) GPU-h\)", out).groups())
    inference = re.findall(r"^(?:generate|reward_scores) ", out, re.MULTILINE)
    assert per_stage == len(inference) and per_model < per_stage and 0 < model_h < stage_h


def test_the_qwen25_dry_run_fits_offline_from_the_carried_configs(tmp_path):
    # Offline, with an empty Hugging Face cache: the sizes come from w2s_ray/models/configs alone.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), "--preset", "qwen25-scale",
                          "--dry-run", "--storage", str(tmp_path / "store")], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=env, check=True).stdout
    gpu = re.findall(r"^(sft|reward_model|generate|reward_scores) +\S+ +(\S+) +todo .* ([\d.]+) +\S+$", out, re.MULTILINE)
    assert {rung for _, rung, _ in gpu} == {"0.5b", "1.5b", "3b", "7b", "32b", "72b"}, "every paired rung"
    assert all(float(gb) <= FIT_GB for *_, gb in gpu) and "OVER MEMORY" not in out
    assert len(gpu) == len(re.findall(r"^(?:sft|reward_model|generate|reward_scores) ", out, re.MULTILINE))
    assert re.search(r"^fetch +72b +72b +todo +download 145 GB \(bf16\)", out, re.MULTILINE)


def test_inference_takes_the_plan_of_the_models_size_and_tiny_rungs_keep_theirs(ray_local, tmp_path):
    from w2s_ray.models.location import ModelRef

    from .test_stages import context

    big = resources.inference_spec(load_config("qwen15-scale").inference, ARCHS["72b"])
    assert (big.tensor_parallel_size, big.gpus_per_actor) == (4, 4.0)
    assert big.concurrency == resources.infer_memory_gb(ARCHS["72b"], PLANS["72b"].infer)["max_num_seqs"]
    ctx = context(tmp_path, **{"inference.plan": True})
    assert ctx.layout(ctx.base("t1").rung).inference == ctx.config.inference
    assert ctx.layout(ModelRef("x", "y").rung).inference == ctx.config.inference


@pytest.mark.parametrize("preset", preset_names())
def test_every_stage_of_every_shipped_preset_fits_its_device_in_the_layout_it_runs(preset):
    from w2s_ray.plan import plan_stages, stage_memory_gb
    from w2s_ray.stages import fetch

    config = fetch.pin_revisions(load_config(preset), lambda rung: "planned")
    over = [(s["stage"], s.get("tag"), s.get("rung"), round(m)) for s in plan_stages(config)
            if (m := stage_memory_gb(config, s)) is not None and m > FIT_GB]
    assert not over, f"{preset}: stages over {FIT_GB:.0f} GB per GPU: {over}"


def test_the_layout_check_sees_what_a_preset_without_plans_would_run():
    from w2s_ray.plan import stage_memory_gb

    config = load_config("qwen15-paper", {"train.plan": False, "train.num_workers": 1,
                                          "train.use_gpu": True, "inference.plan": False,
                                          "inference.gpus_per_actor": 1, "inference.dtype": "float32"})
    wts_7b = {"stage": "sft", "rung": "7b"}
    assert stage_memory_gb(config, wts_7b) > 80, "7B, fp32, micro-batch 40 on one GPU"
    assert stage_memory_gb(config, {"stage": "generate", "rung": "7b"}) < FIT_GB
    planned = load_config("qwen15-paper")
    assert stage_memory_gb(planned, wts_7b) < FIT_GB


def test_a_sweep_refuses_a_stage_over_memory_unless_told_to_start_it(tmp_path):
    from w2s_ray.checks import checked_config
    from w2s_ray.config import ConfigError

    # Plans follow the length they train at: only one that no layout fits goes over (a 64K-token
    # row's logits alone, 12 bytes per vocabulary entry, exceed the GPU).
    longer = {"storage": str(tmp_path), "train.max_length": 65536}
    with pytest.raises(ConfigError, match=r"sweep\.allow_over_memory: the sft stages of rung '0\.5b' need an "
                                          r"estimated [\d.]+ GB per GPU, over the 72 GB limit \(90% of 80 GB\)"):
        checked_config("qwen15-scale", longer)
    assert checked_config("qwen15-scale", {**longer, "sweep.allow_over_memory": True}).sweep.allow_over_memory
    assert checked_config("qwen15-scale", {"storage": str(tmp_path)})  # the shipped layouts fit


def test_the_dry_run_lists_and_costs_the_confidence_methods_stages(tmp_path):
    """wts-aux-conf trains like wts plus one forward pass per step (8 x params per token, not 6);
    confident-filter adds the weak model's label log-probabilities, a forward pass over D^b
    costed as reward scoring is, and trains on the filtered table."""
    from w2s_ray import plan
    from w2s_ray.stages import fetch

    config = fetch.pin_revisions(load_config("qwen15-scale", {
        "storage": str(tmp_path), "pairs": [["32b", "72b"]],
        "methods": ["weak", "wts", "ceiling", "wts-aux-conf", "confident-filter"]}), lambda rung: "0" * 40)
    stages = plan.plan_stages(config)
    by_tag = {s["tag"]: s for s in stages if s["stage"] in ("sft", "label_confidence")}
    (wts_request, wts_h), (aux_request, aux_h) = (plan.cost(config, by_tag[t]) for t in ("wts", "wts-aux-conf"))
    assert aux_request == f"{wts_request} loss logconf" and aux_h == pytest.approx(wts_h * 8 / 6)
    assert plan.cost(config, by_tag["confident-filter"]) == (wts_request, pytest.approx(wts_h))
    scoring = by_tag["label_confidence"]
    assert scoring["rung"] == "32b" and scoring["inputs"][0] == f"sft/{by_tag['weak']['key']}"
    request, hours = plan.cost(config, scoring)
    assert request == "2 GPU vLLM tp2 (prompt log-probs)" and hours > 0
    assert plan.stage_memory_gb(config, scoring) is not None
    assert [s["stage"] for s in stages].count("label_confidence") == 1
    assert not (tmp_path / "artifacts").exists(), "a dry run writes nothing"
