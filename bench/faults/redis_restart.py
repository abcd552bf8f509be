"""Fault: Redis dies (SIGKILL, a crash) mid-run and comes back from its append-only file.

Expected: finished jobs and queued jobs (record, queue position and broker message) survive;
the in-flight job completes on its own worker (no re-run elsewhere, even when the outage outlives
the heartbeat TTL) or fails with a clear error (never stays `in_progress`); while Redis
is down the gateway answers 503 (OpenAI-shaped), and it recovers by itself. Run it:

    .venv/bin/python -m bench.faults.redis_restart --trials 3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import redis

from bench.faults.ledger import FINAL, Audit, Ledger, api, submit, wait_for
from bench.faults.stack import ComposeStack, scratch_dir

PARKED_MODEL = "spacetime-parked"  # in the models file, served by no worker: its jobs stay queued
MODELS_FILE = [{"name": PARKED_MODEL, "source": "spacetime-tiny", "sizes": ["128x128"], "seconds": ["1"],
                "fps": 8, "default_steps": 1, "default_guidance": 1.0}]


def probe(client: httpx.Client, video_id: str) -> str:
    """One status read through the gateway: the HTTP status, or the transport error's name."""
    try:
        response = client.get(f"/v1/videos/{video_id}", timeout=5)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if response.status_code >= 500 and response.json().get("error", {}).get("type") != "server_error":
        return f"{response.status_code} (not OpenAI-shaped)"
    return str(response.status_code)


def run_trials(stack: ComposeStack, ledger: Ledger, trials: int, down_s: float = 2.0, steps: int = 8) -> Audit:
    audit = Audit("Redis SIGKILL + restart (AOF)")
    broker = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    finished = [i for i, ok in ledger.jobs.items() if "completed" in ok and
                (wait_for(ledger.client, i, FINAL)["status"] == "completed")]
    if not finished:
        finished.append(ledger.submit()["id"])
        wait_for(ledger.client, finished[0], FINAL)
    codes_down: Counter[str] = Counter()
    in_flight: list[str] = []
    for _ in range(trials):
        parked = submit(ledger.client, model=PARKED_MODEL)
        before_len = broker.llen(f"video.{PARKED_MODEL}")
        running = ledger.submit(allowed={"completed", "failed"}, num_inference_steps=steps)
        in_flight.append(running["id"])
        wait_for(ledger.client, running["id"], ("in_progress",), timeout_s=120)
        time.sleep(0.2)
        stack.stop_redis(kill=True)
        stopped = time.monotonic()
        while time.monotonic() - stopped < down_s:
            codes_down[probe(ledger.client, running["id"])] += 1
            time.sleep(0.1)
        stack.start_redis()
        restarted = time.monotonic()
        while probe(ledger.client, running["id"]) != "200":
            if time.monotonic() - restarted > 30:
                audit.notes.append("gateway did not recover within 30 s of Redis returning")
                break
            time.sleep(0.05)
        audit.measures["max gateway recovery s"] = max(audit.measures.get("max gateway recovery s", 0),
                                                       round(time.monotonic() - restarted, 2))
        # Queued job: record, position and broker message all survived.
        after = ledger.client.get(f"/v1/videos/{parked['id']}").json()
        if after.get("status") != "queued" or broker.llen(f"video.{PARKED_MODEL}") < before_len:
            audit.lost += 1
            audit.notes.append(f"queued {parked['id']}: {after.get('status')}, broker messages "
                               f"{broker.llen(f'video.{PARKED_MODEL}')} (was {before_len})")
        else:
            audit.measures["queued survived"] = audit.measures.get("queued survived", 0) + 1
        ledger.client.delete(f"/v1/videos/{parked['id']}")
        audit.trials += 1
    ledger.audit(audit, ids=finished + in_flight)
    # A job running through the outage should finish on its own worker, not be re-run elsewhere.
    reruns = sum(1 for i in in_flight if int(broker.hget(f"st:job:{i}", "attempts") or 0) > 1)
    audit.measures["in-flight re-runs"] = reruns
    if reruns:
        audit.notes.append(f"FAIL: {reruns} of {len(in_flight)} in-flight jobs were re-run by another worker")
    down = ", ".join(f"{code}x{n}" for code, n in sorted(codes_down.items()))
    audit.notes.append(f"answers while Redis was down: {down}")
    if set(codes_down) - {"503"}:
        audit.notes.append("FAIL: the gateway answered something other than 503 while Redis was down")
    return audit


def models_file(stack_dir: Path) -> dict[str, str]:
    """Write the models file into the stack's /models mount; the deploy/.env line that uses it."""
    import json

    (stack_dir / "models").mkdir(parents=True, exist_ok=True)
    (stack_dir / "models" / "models.json").write_text(json.dumps(MODELS_FILE))
    return {"SPACETIME_MODELS_FILE": "/models/models.json"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--down-s", type=float, default=2.0, help="how long Redis stays down")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs) and print it")
    args = parser.parse_args()
    with scratch_dir(args.keep) as tmp:
        with ComposeStack(Path(tmp), overrides=models_file(Path(tmp))) as stack:
            stack.start(workers=2)
            ledger = Ledger(stack, api(stack))
            audit = run_trials(stack, ledger, args.trials, args.down_s)
    return audit.report()


if __name__ == "__main__":
    sys.exit(main())
