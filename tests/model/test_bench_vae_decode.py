"""bench/vae_decode.py (tiled against untiled decode) runs end to end on the CPU with a tiny VAE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decode_bench_times_both_ways():
    run = subprocess.run([sys.executable, "bench/vae_decode.py", "--device", "cpu", "--tiny", "--frames", "5",
                          "--sizes", "32x48", "48x32"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith(("32x", "48x"))]
    assert [(r[0], r[1]) for r in rows] == [("32x48", "untiled"), ("32x48", "tiled"),
                                            ("48x32", "untiled"), ("48x32", "tiled")]
    assert all(float(r[2]) > 0 and r[3] == "-" for r in rows)  # seconds; no peak memory off CUDA
