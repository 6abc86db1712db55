"""benchmarks/gpu_check.py runs where it is meant to (one CUDA GPU, no Ray, no vLLM) and, with
tiny shapes, here: so it cannot rot before the day a GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_the_training_step_and_generation_without_ray_or_vllm():
    code = ("import json, sys, runpy\n"
            "sys.argv = ['gpu_check.py', '--tiny']\n"
            "module = runpy.run_path('benchmarks/gpu_check.py', run_name='gpu_check')\n"
            "results = module['main'](['--tiny'])\n"
            "print(json.dumps({'results': results, 'loaded': sorted(m for m in ('ray', 'vllm') if m in sys.modules)}))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    (row,) = out["results"]
    assert row["size"] == "tiny" and row["steps"] == 3 and row["micro x accum"] == "2 x 2"
    assert row["train tokens/s"] > 0 and row["generated tokens/s"] > 0 and row["estimate GB"] > 0
    cuda = torch.cuda.is_available()
    assert (row["peak allocated GB"] is not None) == cuda and (row["MFU"] is not None) == cuda
    assert "size: tiny | micro x accum: 2 x 2" in run.stdout


def test_without_a_gpu_the_full_check_says_how_to_run_it_here():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the full check runs, nothing to refuse")
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 2 and "no CUDA GPU here: --tiny runs the check" in run.stderr
