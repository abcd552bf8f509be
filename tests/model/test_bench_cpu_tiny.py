"""bench/cpu_tiny.py runs end to end (the CPU path's table: stages, the whole call, fast mode)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_tiny_bench_prints_every_stage_and_fast_mode():
    run = subprocess.run([sys.executable, "bench/cpu_tiny.py", "--repeats", "1", "--steps", "4", "--threads", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("stage")) + 1:]  # below the header
    rows = {line[:24].strip(): [float(v) for v in line[24:].split()] for line in table if line.strip()}
    expected = ["text encode", "denoise", "VAE decode", "MP4 encode", "total (pipe() + MP4)", "total, fast mode"]
    assert list(rows) == expected, run.stdout
    assert all(median > 0 and minimum > 0 for median, minimum in rows.values())
    assert "spacetime-tiny (trained weights)" in run.stdout
