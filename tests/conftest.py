"""Shared fixtures: one real local Ray instance, a tiny saved checkpoint, a fresh store."""

from __future__ import annotations

import os

import pytest
import ray
import torch


@pytest.fixture(scope="session")
def ray_local(s3_server):
    # After the S3 server: Ray's workers inherit its endpoint from this process's environment.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from w2s_ray.runtime import nodes
    from w2s_ray.sweep import WARM_WORKERS

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="w2s_ray",
             _system_config=WARM_WORKERS, resources={nodes.GPU_NODE: 1.0})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 protocol server (moto) on loopback; pyarrow, Ray and boto3 find it through
    AWS_ENDPOINT_URL, the same override a user sets for MinIO or R2. Yields the endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="w2s")
    yield env["AWS_ENDPOINT_URL"]
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """An untrained two-layer Qwen2 with the word-level tokenizer, saved like a hub checkpoint."""
    from transformers import Qwen2ForCausalLM

    from w2s_ray.ladder import recipe as ladder_recipe
    from w2s_ray.ladder import tiny_ladder
    from w2s_ray.models.tokenizer import build_tokenizer, save_checkpoint

    folder = tmp_path_factory.mktemp("tiny-ckpt")
    tok = build_tokenizer(tiny_ladder.vocabulary(ladder_recipe.RECIPE))
    torch.manual_seed(0)
    rung = ladder_recipe.RungRecipe("test", hidden=64, layers=2, heads=2, steps=0, lr=0.0)
    config = tiny_ladder.model_config(ladder_recipe.RECIPE, rung, len(tok), tok.eos_token_id, tok.pad_token_id)
    save_checkpoint(Qwen2ForCausalLM(config), tok, folder, own_subfolder=True)
    return str(folder)
