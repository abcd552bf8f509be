#!/usr/bin/env python3
"""Container health checks (the Dockerfile's HEALTHCHECK runs this; exit 0 = healthy).

    spacetime-healthcheck gateway [--url http://127.0.0.1:8000/healthz]
    spacetime-healthcheck worker  [--host HOSTNAME] [--redis-url URL]

gateway: GET /healthz answers 200 within the timeout (standard library only, so it costs nothing
         to start).
worker:  a pool process on this host has a live heartbeat key in Redis (`st:worker:<host>:<pid>`,
         written by workers/tasks.py every SPACETIME_HEARTBEAT_S once its pipeline is loaded, with a
         TTL of three periods). This is stronger than `celery inspect ping`: a worker whose pool
         process is stuck loading weights or has died does not heartbeat. Inside a container the
         host name is the container's, so the check is per replica.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request

HEARTBEAT_PREFIX = "st:worker:"  # service/jobs.py worker_key()


def check_gateway(url: str, timeout_s: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200, f"{url} answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable: {exc}"


def check_worker(redis_url: str, host: str, timeout_s: float) -> tuple[bool, str]:
    import redis  # a worker image always has it

    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        live = [key for key in client.scan_iter(match=f"{HEARTBEAT_PREFIX}{host}:*", count=1000)]
    except redis.RedisError as exc:
        return False, f"Redis at {redis_url} unreachable: {exc}"
    if not live:
        return False, f"no live heartbeat for host {host!r} (pipeline still loading, or the pool process died)"
    return True, f"{len(live)} live pool process(es) on {host}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spacetime-healthcheck", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    gateway = sub.add_parser("gateway")
    gateway.add_argument("--url", default="http://127.0.0.1:8000/healthz")
    worker = sub.add_parser("worker")
    worker.add_argument("--host", default=socket.gethostname(), help="host part of the heartbeat key")
    worker.add_argument("--redis-url", default=os.environ.get("SPACETIME_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.role == "gateway":
        ok, detail = check_gateway(args.url, args.timeout)
    else:
        ok, detail = check_worker(args.redis_url, args.host, args.timeout)
    print(("healthy: " if ok else "unhealthy: ") + detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
