"""Fault: SIGKILL a worker (its whole process group, as when a machine dies) in the middle of a job.

Expected: the job completes on another worker, exactly one MP4 exists for it, and its record
shows a second attempt. With `--signal term` it is an upgrade instead (`docker compose up` sends
SIGTERM to the container's main process): the worker finishes the running job itself (Celery warm
shutdown, one attempt), then exits. Run it:

    .venv/bin/python -m bench.faults.worker_kill --trials 3
    .venv/bin/python -m bench.faults.worker_kill --trials 3 --signal term
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis

from bench.faults.ledger import Audit, Ledger, api, wait_for
from bench.faults.stack import ComposeStack, Proc, scratch_dir


def worker_running(stack: ComposeStack, video_id: str, timeout_s: float = 60) -> Proc:
    """The worker (Proc) whose pool process holds the job, from the `st:running` hash."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        holder = client.hget("st:running", video_id)  # "<host>:<pool pid>"
        if holder:
            pid = int(holder.rsplit(":", 1)[1])
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                group = -1
            for worker in stack.workers:
                if worker.alive() and worker.proc.pid == group:
                    return worker
        time.sleep(0.05)
    raise TimeoutError(f"no live worker holds {video_id}")


def run_trials(stack: ComposeStack, ledger: Ledger, trials: int, replace: bool = True, term: bool = False) -> Audit:
    """Needs at least two live workers; with `replace`, starts a new worker after each kill."""
    audit = Audit("worker SIGTERM mid-job (upgrade)" if term else "worker SIGKILL mid-job")
    jobs = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    for _ in range(trials):
        # 10 steps with guidance: long enough (seconds even on an idle machine) to be killed mid-way
        video = ledger.submit(allowed={"completed"}, num_inference_steps=10, guidance_scale=5.0)
        wait_for(ledger.client, video["id"], ("in_progress",), timeout_s=120)
        victim = worker_running(stack, video["id"])
        if term:
            victim.killed = True
            os.kill(victim.proc.pid, signal.SIGTERM)  # the main process only, as Docker does
        else:
            stack.kill_worker(victim)
        killed_at = time.monotonic()
        ledger.audit(audit, ids=[video["id"]])
        audit.measures["max recovery s"] = max(audit.measures.get("max recovery s", 0),
                                               round(time.monotonic() - killed_at, 1))
        attempts = int(jobs.hget(f"st:job:{video['id']}", "attempts") or 0)
        if attempts != (1 if term else 2):
            audit.notes.append(f"{video['id']}: {attempts} attempts recorded, expected {1 if term else 2}")
        if term:
            try:
                victim.proc.wait(60)
            except subprocess.TimeoutExpired:
                audit.notes.append("FAIL: the worker did not exit within 60 s of SIGTERM")
        audit.trials += 1
        if replace:
            stack.start_worker()
            stack.wait_workers(2)
    return audit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--signal", choices=["kill", "term"], default="kill")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs)")
    args = parser.parse_args()
    with scratch_dir(args.keep) as tmp, ComposeStack(tmp) as stack:
        stack.start(workers=2)
        ledger = Ledger(stack, api(stack))
        audit = run_trials(stack, ledger, args.trials, term=args.signal == "term")
    return audit.report()


if __name__ == "__main__":
    sys.exit(main())
