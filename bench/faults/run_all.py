"""Every fault script, each against a fresh stack from docker-compose.yml; prints the table for
docs/reliability.md. About 3 minutes per trial round on a 2-core machine.

    .venv/bin/python -m bench.faults.run_all --trials 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# name -> (module, extra arguments)
FAULTS = {"worker_kill": ("worker_kill", []), "worker_term": ("worker_kill", ["--signal", "term"]),
          "redis_restart": ("redis_restart", []), "disk_full": ("disk_full", []),
          "gateway_restart": ("gateway_restart", [])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(FAULTS), default=list(FAULTS))
    args = parser.parse_args()
    rows, notes, failed = [], [], []
    for name in args.only:
        module, extra = FAULTS[name]
        done = subprocess.run([sys.executable, "-m", f"bench.faults.{module}", "--trials", str(args.trials), *extra],
                              cwd=ROOT, capture_output=True, text=True)
        lines = done.stdout.splitlines()
        rows += [line for line in lines if line.startswith("| ") and not line.startswith("| fault")]
        notes += [f"{name}: {line.strip()[2:]}" for line in lines if line.startswith("  - ")]
        if done.returncode != 0:
            failed.append(name)
            notes.append(f"{name}: exit {done.returncode}: {done.stderr.strip()[-800:]}")
    print("| fault | trials | jobs accepted | completed | failed with a clear error | jobs lost | "
          "duplicate outputs | measured |\n|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for note in notes:
        print("  -", note)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
