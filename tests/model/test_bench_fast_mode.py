"""bench/fast_mode.py runs end to end on the tiny model: its forecast and fewer-steps rows are counted right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fast_mode_bench_prints_forecast_and_fewer_steps_rows():
    run = subprocess.run([sys.executable, "bench/fast_mode.py", "--prompts", "2", "--steps", "5",
                          "--forecast", "2:0.2:0", "--fewer-steps", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in run.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| setting")}
    assert list(rows) == ["exact", "fast (default)", "forecast every 2 from 0.2, order 0", "exact, 3 steps"]
    # 5 steps, the first one always runs, then every 2nd: steps 0, 1, 3 run, 2 and 4 are forecast;
    # guidance on steps 0-2: (2 + 2 + 1) of exact's 5 x 2 sample-passes.
    forecast = rows["forecast every 2 from 0.2, order 0"]
    assert forecast[3] == "50%" and forecast[6] == "3/5" and forecast[7] == "2"  # work, guided, forecast steps
    assert rows["exact, 3 steps"][3] == "60%" and rows["exact, 3 steps"][6] == "3/3"
    assert rows["exact"][6] == "5/5" and rows["exact"][8] == "-"
