"""bench/vae_decode.py (tiled against untiled, float32 against bfloat16 decode) runs end to end on
the CPU, with a tiny random VAE and with the shipped tiny VAE on encoded shapes clips."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rows(stdout: str) -> list[list[str]]:
    """The table's rows: the lines below its header."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("WxH"))
    return [line.split() for line in lines[header + 1:] if line.strip()]


def test_decode_bench_times_each_dtype_both_ways():
    run = subprocess.run([sys.executable, "bench/vae_decode.py", "--device", "cpu", "--tiny", "--frames", "5",
                          "--sizes", "32x48", "48x32", "--dtype", "bfloat16,float32"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = _rows(run.stdout)
    assert [tuple(r[:3]) for r in rows] == [
        (size, dtype, tiling) for size in ("32x48", "48x32") for dtype in ("float32", "bfloat16")  # float32 first
        for tiling in ("untiled", "tiled")]
    assert all(float(r[3]) > 0 and r[4] == "-" and r[6] == "-" for r in rows)  # seconds; no peak off CUDA
    assert all(r[5] == "-" for r in rows if r[1] == "float32")  # the reference itself
    bf16 = [float(r[5]) for r in rows if r[1] == "bfloat16"]
    assert all(30 < value < math.inf for value in bf16)  # bf16 rounding moved the frames, a little


def test_decode_bench_on_the_trained_tiny_vae_compares_with_the_source_clip():
    run = subprocess.run([sys.executable, "bench/vae_decode.py", "--device", "cpu", "--frames", "5",
                          "--vae", "model/weights/spacetime-tiny/vae", "--sizes", "64x64",
                          "--dtype", "float32,bfloat16"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "latents encoded shapes clips" in run.stdout
    rows = {(r[1], r[2]): r for r in _rows(run.stdout)}
    assert set(rows) == {(d, t) for d in ("float32", "bfloat16") for t in ("untiled", "tiled")}
    for (dtype, _), r in rows.items():
        assert 20 < float(r[6]) < 60  # the VAE's round trip of a shapes clip: close, not exact
    assert float(rows["bfloat16", "untiled"][5]) > 40  # bf16 decode: far closer to float32 than the round trip


def test_decode_bench_refuses_unknown_dtypes():
    run = subprocess.run([sys.executable, "bench/vae_decode.py", "--device", "cpu", "--tiny", "--dtype", "fp4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "dtypes from float32, bfloat16, float16" in run.stderr
