"""`spacetime worker` whose post-denoise stage waits at a gate, so a test can hold a job in its
background encode (workers/overlap.py) and cancel it, kill its process or stop the worker there.

Run as `python -m tests.workers.gated_worker worker ...` with SPACETIME_TEST_GATE_DIR set: before
a job's outputs are written, its pool process appends "<job id> <pid>" to <gate>/entered and
waits until the file <gate>/<job id> exists. Everything else is the real worker.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import workers.tasks as tasks

GATE_ENV = "SPACETIME_TEST_GATE_DIR"
_store_outputs = tasks.store_outputs


def gated_store_outputs(ctx: Any, job_id: str, *args: Any) -> dict[str, str]:
    gate = Path(os.environ[GATE_ENV])
    with open(gate / "entered", "a") as f:
        f.write(f"{job_id} {os.getpid()}\n")
    deadline = time.monotonic() + 120
    while not (gate / job_id).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return _store_outputs(ctx, job_id, *args)


tasks.store_outputs = gated_store_outputs  # forked pool processes inherit it

if __name__ == "__main__":
    from workers.cli import main

    sys.exit(main())
