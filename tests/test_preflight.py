"""The preflight on one machine: the local node probed against the local S3 server, and the dry
run of a sweep on that store taking its figures from what it measured."""

import re
import socket
import uuid

import pytest

from w2s_ray import hardware, plan, preflight
from w2s_ray.artifacts import Store
from w2s_ray.config import load_config
from w2s_ray.stages import fetch


def dry_run(storage: str, monkeypatch) -> str:
    monkeypatch.setattr(fetch, "planned_revision", lambda rung: "f" * 40)  # no hub here
    config = load_config("qwen15-scale", {"storage": storage, "pairs": "[[7b, 32b]]",
                                          "methods": "[weak, wts, ceiling]"})
    return plan.dry_run(config)


def figure(pattern: str, text: str) -> float:
    return float(re.search(pattern, text).group(1))


def test_the_preflight_measures_the_local_node_and_the_dry_run_takes_its_figures(
        ray_local, s3_server, monkeypatch, capsys):
    storage = f"s3://w2s/preflight-{uuid.uuid4().hex[:8]}"
    assumed = dry_run(storage, monkeypatch)
    assert "hardware figures assumed (no preflight in this store)" in assumed

    assert preflight.main(["--storage", storage, "--megabytes", "2"]) == 0
    printed = capsys.readouterr().out
    record = Store(storage).read_json(Store(storage).path(*hardware.PREFLIGHT))
    [node] = record["nodes"]
    assert node["node"] == socket.gethostname() and node["torch"].startswith("2.13")
    assert node["store_read_gb_per_s"] > 0 and node["store_write_gb_per_s"] > 0
    assert node["disk_write_gb_per_s"] > 0 and node["disk_read_gb_per_s"] > 0 and node["disk_free_bytes"] > 0
    reduce = record["allreduce"]
    assert reduce == {**reduce, "backend": "gloo", "bytes": 2 << 20, "nodes": 1} and reduce["bus_gb_per_s"] > 0
    figures = record["figures"]
    assert figures["tflops"] is None, "no GPU: the peak stays assumed"
    assert figures["load_gb_per_s"] == min(node["store_read_gb_per_s"], node["disk_read_gb_per_s"])
    assert "all-reduce (gloo, 2 MB) across 1 node(s)" in printed and "not the network's figure" in printed
    assert not [p for p in Store(storage).list_files(Store(storage).path("cluster")) if "probe" in p]

    measured = dry_run(storage, monkeypatch)
    line = next(x for x in measured.splitlines() if x.startswith("hardware figures from the preflight"))
    assert f"{storage}/cluster/preflight.json" in line and record["measured_at"] in line
    for name in ("load_gb_per_s", "disk_write_gb_per_s", "store_write_gb_per_s"):
        assert f"{hardware.ASSUMED[name][2]} {figures[name]:.3g} GB/s" in line
    assert re.search(r"hardware figures assumed: bf16 dense matmul peak .* 312 TFLOP/s$", measured, re.MULTILINE)
    # The engine starts and checkpoints are costed at the measured rates, not the assumed ones.
    for pattern, rates in ((r"engine hosts, one per model \d+ \(([\d.]+) GPU-h\)", ["load_gb_per_s"]),
                           (r"gangs wait: ([\d.]+) GPU-h", ["disk_write_gb_per_s", "store_write_gb_per_s"])):
        before, after = figure(pattern, assumed), figure(pattern, measured)
        slower = all(figures[n] < hardware.ASSUMED[n][0] for n in rates)
        faster = all(figures[n] > hardware.ASSUMED[n][0] for n in rates)
        assert (after > before) if slower else (after < before) if faster else after != before


def test_the_figures_are_the_slowest_nodes():
    nodes = [{"tflops": 280.0, "store_read_gb_per_s": 1.5, "disk_read_gb_per_s": 3.0,
              "disk_write_gb_per_s": 2.5, "store_write_gb_per_s": 0.9},
             {"tflops": 250.0, "store_read_gb_per_s": 2.0, "disk_read_gb_per_s": 1.2,
              "disk_write_gb_per_s": 3.5, "store_write_gb_per_s": 1.1}]
    assert preflight.summary(nodes) == {"tflops": 250.0, "load_gb_per_s": 1.2, "disk_write_gb_per_s": 2.5,
                                        "store_write_gb_per_s": 0.9}
    assert preflight.summary([{**nodes[0], "tflops": None}])["tflops"] is None


def test_a_bad_storage_is_refused_by_name_before_ray_starts(monkeypatch, capsys):
    from w2s_ray import sweep

    def no_ray(*args):
        raise AssertionError("Ray was started before the storage was checked")

    monkeypatch.setattr(sweep, "init_ray", no_ray)
    with pytest.raises(SystemExit) as exit_:
        preflight.main(["--storage", "xx://bucket/w2s"])
    assert exit_.value.code == 2
    assert "storage: 'xx://bucket/w2s': unsupported scheme 'xx://'" in capsys.readouterr().err
