"""bench/remix.py runs end to end and prints one row per strength."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_remix_bench_prints_a_row_per_strength():
    run = subprocess.run([sys.executable, "bench/remix.py", "--prompts", "2", "--strengths", "0.5,1.0", "--steps", "6",
                          "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in run.stdout.splitlines() if line.startswith("| 0.5") or line.startswith("| 1 ")]
    assert [r[0].strip() for r in rows] == ["0.5", "1"], run.stdout
    assert [int(r[1]) for r in rows] == [3, 6]  # steps run: round(strength x 6)
    for r in rows:
        assert r[2].strip().endswith("%") and float(r[7]) >= 0 and float(r[8]) > 0
