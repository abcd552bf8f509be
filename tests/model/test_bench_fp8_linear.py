"""bench/fp8_linear.py runs on the CPU at small shapes, so the GPU breakdown of the FP8 path is not dead code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fp8_linear_bench_prints_every_part_for_every_layer():
    run = subprocess.run([sys.executable, "bench/fp8_linear.py", "--device", "cpu", "--tiny", "--iters", "2", "--warmup", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith(("attention projection", "MLP up", "MLP down"))]
    assert len(rows) == 3 * 5, run.stdout  # no compiled row on the CPU
    assert not any("failed" in row for row in rows), run.stdout
    for row in rows:
        assert float(row.split()[-1].rstrip("x")) > 0  # the speed against the exact path
