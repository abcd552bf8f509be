"""Fault: restart the gateway (SIGTERM, then start it again) while clients poll their jobs.

Expected: no job is lost or changed; clients see connection errors only while no gateway
listens (a client retries them, as the openai SDK does), never a 5xx or a wrong answer; polling
picks up by itself. With two replicas behind a load balancer (docker-compose.yml), a rolling
restart hides even that gap. Run it:

    .venv/bin/python -m bench.faults.gateway_restart --trials 3 --clients 8
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from bench.faults.ledger import FINAL, Audit, Ledger, api
from bench.faults.stack import ComposeStack, scratch_dir, stop


def poll_until_final(client: httpx.Client, video_id: str, seen: Counter[str], lock: threading.Lock,
                     ok_times: list[float], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/v1/videos/{video_id}", timeout=5)
            outcome = str(response.status_code)
        except httpx.HTTPError as exc:
            response, outcome = None, type(exc).__name__
        with lock:
            seen[outcome] += 1
            if outcome == "200":
                ok_times.append(time.monotonic())
        if response is not None and response.status_code == 200 and response.json()["status"] in FINAL:
            return
        time.sleep(0.05)


def run_trials(stack: ComposeStack, ledger: Ledger, trials: int, clients: int = 4) -> Audit:
    audit = Audit("gateway restart while clients poll")
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    worst_gap = 0.0
    for _ in range(trials):
        ids = [ledger.submit()["id"] for _ in range(clients)]
        ok_times: list[float] = []
        pollers = [threading.Thread(target=poll_until_final, args=(ledger.client, i, seen, lock, ok_times))
                   for i in ids]
        for t in pollers:
            t.start()
        time.sleep(1.0)
        assert stack.gateway is not None
        stopped_at = time.monotonic()
        stop(stack.gateway)
        stopped_in = time.monotonic() - stopped_at
        stack.start_gateway()
        started_in = time.monotonic() - stopped_at - stopped_in
        audit.measures["max stop s"] = round(max(audit.measures.get("max stop s", 0), stopped_in), 2)
        audit.measures["max start s"] = round(max(audit.measures.get("max start s", 0), started_in), 2)
        for t in pollers:
            t.join()
        with lock:  # the longest stretch with no successful poll from any client: the restart
            times = sorted(t for t in ok_times if t >= stopped_at - 1.0)
        worst_gap = max([worst_gap] + [b - a for a, b in zip(times, times[1:])])
        ledger.audit(audit, ids=ids)
        audit.trials += 1
    audit.measures["max poll gap s"] = round(worst_gap, 2)
    audit.notes.append("poll answers: " + ", ".join(f"{k}x{v}" for k, v in sorted(seen.items())))
    if any(code.startswith("5") for code in seen):
        audit.notes.append("FAIL: a poll got a 5xx")
    return audit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="jobs polled at once, one client thread each")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs)")
    args = parser.parse_args()
    overrides = {"SPACETIME_MAX_ACTIVE_JOBS": str(max(4, args.clients)), "SPACETIME_RATE_LIMIT_PER_MINUTE": "100000"}
    with scratch_dir(args.keep) as tmp, ComposeStack(tmp, overrides=overrides) as stack:
        stack.start(workers=2)
        ledger = Ledger(stack, api(stack))
        audit = run_trials(stack, ledger, args.trials, args.clients)
    return audit.report()


if __name__ == "__main__":
    sys.exit(main())
