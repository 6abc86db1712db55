"""`python -m w2s_ray.preflight --storage s3://<bucket>/w2s`: check a fresh cluster before the grid.

On every GPU node (one probe per node, an actor on the node): the NVIDIA driver and CUDA as torch
sees them, a bf16 matmul's TFLOP/s (GPU nodes only), the store's read and write throughput (one
stream, `--megabytes` each way) and the local disk's (the node cache's folder: written with
fsync, read back after dropping it from the page cache) with its free space; then an all-reduce
between the first two nodes (NCCL on GPUs, gloo on CPUs) and its bus bandwidth. What it measured
goes to `<storage>/cluster/preflight.json`, where the dry run of a sweep with the same storage
takes its figures from (`hardware.py`).

Joined to a cluster (RAY_ADDRESS), it asks the autoscaler for `--nodes` GPU nodes and waits for
them; on one machine it probes the local node, and both all-reduce ranks run there.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

from w2s_ray import checks, hardware
from w2s_ray.artifacts import Store, cache_dir
from w2s_ray.config import absolute_root
from w2s_ray.runtime import nodes

MB = 1 << 20
CHUNK = 8 * MB


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / max(seconds, 1e-9) / 1e9


class Probe:
    """One per GPU node: what the node is and how fast its store, disk and GPUs are."""

    def node(self) -> str:
        return socket.gethostname()

    def probe(self, store: Store, source: str, nbytes: int) -> dict[str, Any]:
        return {"node": socket.gethostname(), **self.devices(), **self.store_io(store, source, nbytes),
                **self.disk_io(nbytes)}

    def devices(self) -> dict[str, Any]:
        import torch

        smi = shutil.which("nvidia-smi")
        driver = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], check=False,
                                capture_output=True, text=True).stdout.split("\n")[0].strip() if smi else None
        out = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "driver": driver or None,
               "cuda_available": torch.cuda.is_available(), "gpus": [], "tflops": None}
        if torch.cuda.is_available():
            out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            out["tflops"] = self.matmul_tflops()
        return out

    @staticmethod
    def matmul_tflops(n: int = 8192, reps: int = 20) -> float:
        import torch

        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        torch.matmul(a, b)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12

    @staticmethod
    def store_io(store: Store, source: str, nbytes: int) -> dict[str, float]:
        start = time.perf_counter()
        with store.fs.open_input_stream(source) as f:
            got = sum(len(f.read(CHUNK)) for _ in range(-(-nbytes // CHUNK)))
        read = rate(got, time.perf_counter() - start)
        target = f"{source}.{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        block = os.urandom(CHUNK)
        start = time.perf_counter()
        with store.fs.open_output_stream(target) as f:
            for _ in range(-(-nbytes // CHUNK)):
                f.write(block)
        write = rate(nbytes, time.perf_counter() - start)
        store.fs.delete_file(target)
        return {"store_read_gb_per_s": read, "store_write_gb_per_s": write}

    @staticmethod
    def disk_io(nbytes: int) -> dict[str, Any]:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"preflight-{uuid.uuid4().hex[:8]}.bin"
        block = os.urandom(CHUNK)
        try:
            start = time.perf_counter()
            with open(path, "wb") as f:
                f.writelines(block for _ in range(-(-nbytes // CHUNK)))
                f.flush()
                os.fsync(f.fileno())
            write = rate(path.stat().st_size, time.perf_counter() - start)
            with open(path, "rb") as f:
                # Else the read would measure the page cache that the write just filled.
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                start = time.perf_counter()
                while f.read(CHUNK):
                    pass
            read = rate(path.stat().st_size, time.perf_counter() - start)
        finally:
            path.unlink(missing_ok=True)
        return {"disk_folder": str(folder), "disk_write_gb_per_s": write, "disk_read_gb_per_s": read,
                "disk_free_bytes": shutil.disk_usage(folder).free,
                "tmp_free_bytes": shutil.disk_usage(os.environ.get("TMPDIR", "/tmp")).free}

    def address(self) -> tuple[str, int]:
        """Rank 0's rendezvous: Ray's address of this node (the hostname may resolve to loopback)."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def allreduce(self, addr: str, port: int, rank: int, nbytes: int, reps: int = 5) -> dict[str, Any]:
        import datetime as dt

        import torch
        import torch.distributed as dist

        cuda = torch.cuda.is_available()
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=2,
                                timeout=dt.timedelta(seconds=300))
        try:
            x = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda" if cuda else "cpu")
            dist.all_reduce(x)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(reps):
                dist.all_reduce(x)
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / reps
        finally:
            dist.destroy_process_group()
        # A ring all-reduce over n ranks moves 2 (n - 1) / n of the buffer per rank: 1 for two.
        return {"backend": backend, "bytes": x.numel() * 4, "bus_gb_per_s": rate(x.numel() * 4, seconds)}


def gpu_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(nodes.GPU_NODE)]


def wait_for_nodes(want: int, timeout: float) -> list[dict]:
    """The GPU nodes up after asking the autoscaler for `want` of them (on one machine: its own)."""
    from ray.autoscaler.sdk import request_resources

    if not os.environ.get("RAY_ADDRESS"):
        return gpu_nodes()
    request_resources(bundles=[{nodes.GPU_NODE: 1.0}] * want)
    deadline = time.time() + timeout
    while len(found := gpu_nodes()) < want and time.time() < deadline:
        time.sleep(10)
    return found


def run(store: Store, megabytes: int, want: int, timeout: float) -> dict[str, Any]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from w2s_ray.sweep import init_ray

    nbytes = megabytes * MB
    init_ray(None)
    found = wait_for_nodes(want, timeout)
    if not found:
        raise SystemExit(f"preflight: no GPU node (resource {nodes.GPU_NODE}) came up in {timeout:.0f} s")
    source = store.path("cluster", f"preflight-probe-{uuid.uuid4().hex[:8]}.bin")
    store.fs.create_dir(source.rsplit("/", 1)[0], recursive=True)
    with store.fs.open_output_stream(source) as f:
        f.write(os.urandom(nbytes))
    actor = ray.remote(Probe)

    def start(node: dict, gpus: int | None = None):
        gpus = (1 if node["Resources"].get("GPU") else 0) if gpus is None else gpus
        return actor.options(**nodes.on_gpu_node(num_gpus=gpus, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False))).remote()

    try:
        probes = [start(n) for n in found]
        results = ray.get([p.probe.remote(store, source, nbytes) for p in probes])
        # Two ranks on the first two nodes; on one node both there (not a measure of its network),
        # on CPUs when it has a single GPU (NCCL takes one GPU per rank, and the probe holds it).
        single_gpu = found[0]["Resources"].get("GPU", 0) == 1
        pair = (probes[:2] if len(probes) > 1 else [start(found[0], 0), start(found[0], 0)] if single_gpu
                else [probes[0], start(found[0])])
        addr, port = ray.get(pair[0].address.remote())
        reduce = ray.get([p.allreduce.remote(addr, port, r, nbytes) for r, p in enumerate(pair)])[0]
        reduce["nodes"] = len({*ray.get([p.node.remote() for p in pair])})
    finally:
        store.fs.delete_file(source)
        if os.environ.get("RAY_ADDRESS"):
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[])  # the nodes go back when idle, as in a sweep
    record = {"measured_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "bytes": nbytes, "nodes": results, "allreduce": reduce, "figures": summary(results)}
    store.write_json(store.path(*hardware.PREFLIGHT), record)
    return record


def summary(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """The slowest node's figures under `hardware.ASSUMED`'s names; None where none measured."""
    def slowest(key):
        values = [r[key] for r in results if r.get(key) is not None]
        return min(values) if values else None

    load = [v for v in (slowest("store_read_gb_per_s"), slowest("disk_read_gb_per_s")) if v is not None]
    return {"tflops": slowest("tflops"), "load_gb_per_s": min(load) if load else None,
            "disk_write_gb_per_s": slowest("disk_write_gb_per_s"),
            "store_write_gb_per_s": slowest("store_write_gb_per_s")}


def report(record: dict[str, Any], where: str) -> str:
    lines = [f"preflight of {len(record['nodes'])} node(s), {record['bytes'] / MB:.0f} MB per transfer:"]
    for n in record["nodes"]:
        gpu = (f"{len(n['gpus'])} x {n['gpus'][0]}, {n['tflops']:.0f} bf16 TFLOP/s" if n["gpus"]
               else "no GPU visible to torch")
        lines.append(f"  {n['node']}: driver {n['driver'] or 'none'}, torch {n['torch']} (CUDA "
                     f"{n['torch_cuda'] or 'none'}), {gpu}; store read {n['store_read_gb_per_s']:.2f} GB/s, "
                     f"write {n['store_write_gb_per_s']:.2f} GB/s; disk {n['disk_folder']} write "
                     f"{n['disk_write_gb_per_s']:.2f} GB/s, read {n['disk_read_gb_per_s']:.2f} GB/s, "
                     f"{n['disk_free_bytes'] / 1e9:.0f} GB free")
    r = record["allreduce"]
    lines.append(f"  all-reduce ({r['backend']}, {r['bytes'] / MB:.0f} MB) across {r['nodes']} node(s): "
                 f"{r['bus_gb_per_s']:.2f} GB/s bus bandwidth"
                 + ("" if r["nodes"] > 1 else " (both ranks on one node: not the network's figure)"))
    lines.append(f"written to {where}; a dry run with this storage takes its figures from it")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w2s_ray.preflight", description=__doc__.split("\n")[0])
    parser.add_argument("--storage", required=True, help="the sweep's store (path or s3:// gs:// URI)")
    parser.add_argument("--megabytes", type=int, default=1024, help="bytes per transfer, in MiB (default 1024)")
    parser.add_argument("--nodes", type=int, default=2, help="GPU nodes to probe on a cluster (default 2)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for them (default 1200)")
    args = parser.parse_args(argv)
    if args.megabytes < 1 or args.nodes < 1:
        parser.error("--megabytes and --nodes must be >= 1")
    problem = checks.storage_problem(args.storage)  # before Ray starts, as for a sweep
    if problem:
        parser.error(problem)
    store = Store(absolute_root(args.storage))
    record = run(store, args.megabytes, args.nodes, args.timeout)
    print(report(record, store.uri(*hardware.PREFLIGHT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
