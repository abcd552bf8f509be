"""bench/gpu_pipeline.py runs end to end on the CPU (tiny dims), so the whole-pipeline GPU benchmark is
not dead code, and on the same components our pipeline draws the same video as diffusers' WanPipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_bench_runs_and_ours_matches_wan_pipeline(tmp_path):
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, "bench/gpu_pipeline.py", "--tiny", "--device", "cpu", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["run"]: r for r in json.loads(out.read_text())}
    assert list(rows) == ["diffusers WanPipeline, eager (anchor)", "ours exact, eager",
                          "ours exact, eager, fused GELU", "ours exact, eager, VAE bf16",
                          "ours exact, eager, GELU+VAE bf16+cudnn",
                          "ours exact, eager, pair as 2 calls", "ours fast, eager", "ours fast, no forecasts, eager",
                          "ours fast, forecast every 3, eager", "ours fast + FP8, eager"]
    assert all(r["seconds"] > 0 for r in rows.values())
    # Same folder, same seed, float32 on the CPU: the two pipelines draw the same frames.
    assert rows["diffusers WanPipeline, eager (anchor)"]["psnr_vs_ours_exact"] > 40
    assert rows["ours exact, eager, pair as 2 calls"]["psnr_vs_ours_exact"] > 40  # same video
    # The fused GELU runs on CUDA only: on the CPU the row is the exact row, frame for frame.
    assert rows["ours exact, eager, fused GELU"]["psnr_vs_ours_exact"] == float("inf")
    # A bf16 decode rounds the frames a little (the tiny random VAE: ~50 dB); with it the tuned row
    # (fused GELU and cudnn.benchmark: nothing on the CPU) draws the same frames.
    vae_bf16 = rows["ours exact, eager, VAE bf16"]["psnr_vs_ours_exact"]
    assert 35 < vae_bf16 < float("inf")
    assert rows["ours exact, eager, GELU+VAE bf16+cudnn"]["psnr_vs_ours_exact"] == vae_bf16
    fast = rows["ours fast, eager"]["stats"]
    assert fast["mode"] == "fast" and fast["guided_steps"] < fast["steps"]
    fp8 = rows["ours fast + FP8, eager"]
    assert fp8["stats"]["mode"] == "fast" and fp8["stats"]["guided_steps"] == fast["guided_steps"]
    # FP8 rounding moves the frames a little further from exact than fast mode alone (CPU: 46.9 vs 51.2 dB).
    assert 30 < fp8["psnr_vs_ours_exact"] < rows["ours fast, eager"]["psnr_vs_ours_exact"]
    assert "ours exact, eager" in run.stdout and "vs anchor" in run.stdout
    # 3 steps, the first 20 % (1 step) always runs: every 3 -> steps 0, 1 run, step 2 is forecast;
    # the default's gap (0.1 of 3 steps) forecasts nothing, as "no forecasts".
    forecast = rows["ours fast, forecast every 3, eager"]
    assert (forecast["stats"]["forwards"], forecast["stats"]["forecast_steps"]) == (2, 1)
    assert rows["ours fast, eager"]["stats"]["forecast_steps"] == 0
    assert 20 < forecast["psnr_vs_ours_exact"] < rows["ours fast, eager"]["psnr_vs_ours_exact"]


def test_pipeline_bench_runs_a_subset_and_refuses_unknown_rows(tmp_path):
    out = tmp_path / "rows.json"
    cmd = [sys.executable, "bench/gpu_pipeline.py", "--tiny", "--device", "cpu", "--json", str(out)]
    run = subprocess.run([*cmd, "--only", "ours-forecast3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [r["run"] for r in json.loads(out.read_text())]
    assert rows == ["diffusers WanPipeline, eager (anchor)", "ours fast, forecast every 3, eager"]
    assert "PSNR against: diffusers WanPipeline, eager (anchor)" in run.stdout  # no exact row of ours ran
    bad = subprocess.run([*cmd, "--only", "ours-turbo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown rows ['ours-turbo']" in bad.stderr
