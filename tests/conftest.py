"""Shared fixtures: one real local Ray instance, a tiny saved checkpoint, a fresh store."""

from __future__ import annotations

import os
import threading
import time

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
    MOTO.append(server)
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


MOTO: list = []


class S3Traffic:
    """The object GETs the local S3 server answers under a key prefix, observed at the server:
    how many were in flight at once (each held `delay` seconds, an S3-like first-byte latency),
    how many asked for a byte range, and the bytes sent."""

    def __init__(self, prefix: str, delay: float = 0.02):
        self.prefix, self.delay = prefix, delay
        self.lock = threading.Lock()
        self.active = self.most = self.gets = self.ranged = self.bytes = 0

    def wrap(self, app):
        def counted(environ, start_response):
            if environ["REQUEST_METHOD"] != "GET" or not environ["PATH_INFO"].startswith(self.prefix):
                return app(environ, start_response)
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
            try:
                time.sleep(self.delay)
                body = list(app(environ, start_response))
            finally:
                with self.lock:
                    self.active -= 1
            with self.lock:
                self.gets += 1
                self.ranged += "HTTP_RANGE" in environ
                self.bytes += sum(map(len, body))
            return body

        return counted


@pytest.fixture
def s3_traffic(s3_server):
    """Call with a key prefix (`/bucket/...`) to observe the server's GETs under it."""
    server = MOTO[-1]._server
    app = server.app
    made = []

    def observe(prefix: str) -> S3Traffic:
        made.append(S3Traffic(prefix))
        server.app = made[-1].wrap(server.app)
        return made[-1]

    yield observe
    server.app = app


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
