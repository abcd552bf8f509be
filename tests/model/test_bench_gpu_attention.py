"""bench/gpu_attention.py (SDPA's rate in a burst, sustained, and between matmuls) runs end to end on
the CPU with a tiny shape, so the GPU script is not dead code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_attention_bench_times_three_phases_on_the_cpu():
    run = subprocess.run([sys.executable, "bench/gpu_attention.py", "--device", "cpu", "--tiny", "--seconds", "0.5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "SDPA MATH" in lines[0] and "token-major strided" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("phase"))
    assert "SM MHz" not in lines[header]  # no GPU clock off CUDA
    rows = {r[0]: r for r in (line.split() for line in lines[header + 1:] if line.strip())}
    assert list(rows) == ["burst", "sustained", "interleaved"]
    assert int(rows["burst"][1]) == 3 and int(rows["sustained"][1]) >= 3 and int(rows["interleaved"][1]) >= 3
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows.values())  # ms per call, TFLOP/s
    assert rows["interleaved"][5] != "-" and rows["sustained"][5] == "-"  # the matmul's rate, where it ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gets")
def test_attention_bench_without_cuda_says_so():
    run = subprocess.run([sys.executable, "bench/gpu_attention.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "--device cpu --tiny" in run.stdout
