"""The node-local cache of a remote store, against a real S3 server: one download per node and
artifact, no partial copy after a killed download, weights only for processes that read them, and
least-recently-used eviction past the budget."""

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from w2s_ray import node_cache
from w2s_ray.artifacts import Store


def put(store: Store, folder: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        store.write_bytes_atomic(f"{folder}/{name}", data)


def fetch_in_process(root: str, folder: str, cache: str, out) -> None:
    os.environ["W2S_RAY_CACHE"] = cache
    out.put(Store(root).local_dir(folder))


def test_concurrent_readers_on_one_node_share_one_download(s3_server, tmp_path, monkeypatch):
    store = Store(f"s3://w2s/{tmp_path.name}-share")
    folder = store.path("artifacts", "sft", "k1", "attempt-1")
    put(store, folder, {"model.safetensors": os.urandom(4 << 20), "config.json": b"{}"})
    cache = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=fetch_in_process, args=(store.root, folder, str(cache), out))
             for _ in range(4)]
    for p in procs:
        p.start()
    paths = {out.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(timeout=60)
    assert len(paths) == 1
    local = Path(paths.pop())
    assert (local / "model.safetensors").stat().st_size == 4 << 20
    assert len(node_cache.downloads(cache / "remote")) == 1, "the other three waited and reused it"
    assert not list((cache / "remote").glob("*.tmp-*"))


def fetch_with(root: str, folder: str, cache: str, sizes: dict, out) -> None:
    """A fetch in its own process, with the node cache's transfer sizes set small."""
    for name, value in sizes.items():
        setattr(node_cache, name, value)
    fetch_in_process(root, folder, cache, out)


#: 24 files of 2 MiB in 512 KiB parts, at most 4 MiB of files in flight
SMALL = {"PART_BYTES": 512 << 10, "WINDOW_BYTES": 4 << 20, "CONCURRENCY": 8}
MODEL = {f"model-{i:05d}-of-00024.safetensors": 2 << 20 for i in range(24)}


def test_a_model_of_many_files_is_fetched_once_per_node_with_concurrent_ranged_requests(
        s3_server, s3_traffic, tmp_path):
    store = Store(f"s3://w2s/{tmp_path.name}-many")
    folder = store.path("artifacts", "sft", "k0", "attempt-1")
    put(store, folder, {name: os.urandom(size) for name, size in MODEL.items()})
    traffic = s3_traffic(f"/{folder}/")
    cache = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=fetch_with, args=(store.root, folder, str(cache), SMALL, out)) for _ in range(2)]
    for p in procs:
        p.start()
    paths = {out.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(timeout=60)
    assert len(paths) == 1 and len(node_cache.downloads(cache / "remote")) == 1
    assert traffic.most >= 4, f"at most {traffic.most} requests at once"
    assert traffic.ranged == traffic.gets == 24 * 4, "every file in four ranged parts, each fetched once"
    assert traffic.bytes == sum(MODEL.values())
    local = Path(paths.pop())
    assert {p.name: p.stat().st_size for p in local.iterdir()} == MODEL


def complete_files(folder: Path) -> int:
    """Files a copy in progress has finished (the transfer writes each under a temporary name)."""
    try:
        partial = next(p for p in folder.iterdir() if p.name.endswith(node_cache.PARTIAL))
        return sum(1 for p in partial.iterdir() if p.name.endswith(".safetensors"))
    except (FileNotFoundError, StopIteration):  # not started yet, or renamed while we looked
        return 0


def test_a_copy_killed_half_way_resumes_and_fetches_only_what_is_missing(s3_server, s3_traffic, tmp_path,
                                                                         monkeypatch):
    store = Store(f"s3://w2s/{tmp_path.name}-kill")
    folder = store.path("artifacts", "sft", "k2", "attempt-1")
    files = {name: os.urandom(size) for name, size in MODEL.items()}
    put(store, folder, files)
    traffic = s3_traffic(f"/{folder}/")
    cache = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()  # held here: the child unpickles it after start()
    proc = ctx.Process(target=fetch_with, args=(store.root, folder, str(cache), SMALL, out))
    proc.start()
    deadline = time.time() + 300
    while time.time() < deadline and complete_files(cache / "remote") < 12:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    kept = complete_files(cache / "remote")
    assert 12 <= kept < 24, "killed half-way"
    assert not node_cache.downloads(cache / "remote")

    monkeypatch.setenv("W2S_RAY_CACHE", str(cache))
    for name, value in SMALL.items():
        monkeypatch.setattr(node_cache, name, value)
    local = Path(store.local_dir(folder))
    assert {p.name: p.stat().st_size for p in local.iterdir()} == MODEL
    assert all((local / name).read_bytes() == data for name, data in files.items())
    (event,) = node_cache.downloads(cache / "remote")
    assert event["kept_bytes"] >= kept * (2 << 20)
    total = sum(MODEL.values())
    assert traffic.bytes <= 1.1 * total, f"{traffic.bytes / total:.2f} x the model's size fetched in all"
    assert not list((cache / "remote").glob("*.tmp-*")), "the partial copy became the entry"


def test_a_process_that_reads_no_weights_copies_no_weights(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path / "cache"))
    store = Store(f"s3://w2s/{tmp_path.name}-meta")
    folder = store.path("artifacts", "sft", "k3", "attempt-1")
    put(store, folder, {"model.safetensors": b"w" * 1000, "config.json": b"{}",
                        "tokenizer/tokenizer.json": b"{}"})
    light = Path(store.local_dir(folder, weights=False))
    assert sorted(str(p.relative_to(light)) for p in light.rglob("*") if p.is_file()) == \
        ["config.json", "tokenizer/tokenizer.json"]
    full = Path(store.local_dir(folder))
    assert (full / "model.safetensors").read_bytes() == b"w" * 1000


def test_least_recently_used_copies_go_past_the_budget(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("W2S_RAY_CACHE_GB", str(2500 / 1e9))  # room for two 1,000-byte copies
    monkeypatch.setattr(node_cache, "IN_USE_S", 0.0)
    store = Store(f"s3://w2s/{tmp_path.name}-lru")
    paths = {}
    for i, name in enumerate("abc"):
        folder = store.path("artifacts", "sft", name, "attempt-1")
        put(store, folder, {"model.safetensors": b"x" * 1000})
        paths[name] = Path(store.local_dir(folder))
        os.utime(paths[name], (1000.0 * (i + 1),) * 2)  # a, b, c used in that order
    assert not paths["a"].exists() and paths["b"].exists() and paths["c"].exists()
    os.utime(paths["b"], (5000.0,) * 2)  # b read again: c is now the least recently used
    folder = store.path("artifacts", "sft", "d", "attempt-1")
    put(store, folder, {"model.safetensors": b"x" * 1000})
    store.local_dir(folder)
    assert paths["b"].exists() and not paths["c"].exists()


def test_a_budget_that_is_not_a_number_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_RAY_CACHE_GB", "lots")
    with pytest.raises(ValueError, match="W2S_RAY_CACHE_GB: expected a number of GB, got 'lots'"):
        node_cache.budget_bytes(tmp_path)


@pytest.mark.slow
def test_every_rank_of_a_gang_has_its_nodes_copy_before_the_process_group_starts(ray_local, s3_server, tmp_path):
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from w2s_ray.config import TrainHParams
    from w2s_ray.models.location import ModelLocation
    from w2s_ray.runtime.ray_train import CopiesFirstConfig

    store = Store(f"s3://w2s/{tmp_path.name}-gang")
    folder = store.path("artifacts", "sft", "k5", "attempt-1")
    put(store, folder, {"model.safetensors": os.urandom(1 << 20), "config.json": b"{}"})
    cache, seen = tmp_path / "cache", tmp_path / "seen"
    seen.mkdir()

    class Recorded(ModelLocation):
        def local(self, weights: bool = True) -> str:
            import torch.distributed as dist

            os.environ["W2S_RAY_CACHE"] = str(cache)  # Ray's workers started before this test
            path = super().local(weights)
            (seen / f"{os.getpid()}-weights={weights}-group={dist.is_initialized()}").touch()
            return path

    def loop(config):
        import torch.distributed as dist

        copies = len(node_cache.downloads(cache / "remote"))
        rank = ray.train.get_context().get_world_rank()
        (seen / f"loop-rank{rank}-group={dist.is_initialized()}-copies={copies}").touch()

    hp = TrainHParams(num_workers=2, strategy="fsdp", cpus_per_worker=0.5)
    cfg = {"model": Recorded(store.root, folder, stored=True), "hp": hp.model_dump(), "anchor": None}
    TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                          run_config=RunConfig(storage_path=str(tmp_path / "runs")),
                          torch_config=CopiesFirstConfig(train_cfg=cfg)).fit()
    assert sorted(p.name.split("-", 1)[1] for p in seen.iterdir()) == [
        "rank0-group=True-copies=2", "rank1-group=True-copies=2",  # the loop: a real gang, copies made
        "weights=False-group=False", "weights=True-group=False"], "rank 0 reads weights, rank 1 not; both before the group"
