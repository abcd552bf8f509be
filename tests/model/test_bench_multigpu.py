"""bench/multigpu.py runs end to end on the CPU (gloo, tiny preset), so the GPU benchmark is not dead code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_multigpu_bench_prints_its_table_on_the_cpu():
    run = subprocess.run([sys.executable, "bench/multigpu.py", "--device", "cpu", "--tiny", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("spacetime-tiny")]
    assert [row[2] for row in rows] == ["1", "2"]  # one rank, then two
    assert rows[0][4] == "1.00" and float(rows[1][3]) > 0  # ms per forward
    assert float(rows[1][6]) > 0 and float(rows[1][8]) > 0  # decode s, whole video s
