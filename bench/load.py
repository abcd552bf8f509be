"""Bounded load test on loopback: many clients submit and poll videos against the tiny model.

Starts the stack from docker-compose.yml as local processes (bench/faults/stack.py: Redis, the
gateway, `--workers` CPU workers), or uses a running one (`--url` + `--key`). Each client has
its own API key and loops: create a 1 s 128x128 video, poll it every `--poll-s` until it is
final, download the MP4 and check it is one, then start over. Clients stop creating at
`--jobs` videos in all or after `--duration-s`, whichever comes first; then the queue must drain
within `--drain-s`. It stops by itself and prints a table.

    .venv/bin/python bench/load.py --clients 16 --jobs 40 --duration-s 180 --workers 2

Pass criteria (exit 0): no errors (any non-2xx, transport error or bad MP4), no lost jobs
(every accepted job completed), the queue drained.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from bench.faults.ledger import TINY_JOB  # noqa: E402
from bench.faults.stack import ComposeStack, scratch_dir  # noqa: E402


@dataclass
class Tally:
    create_ms: list[float] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)
    download_ms: list[float] = field(default_factory=list)
    job_s: list[float] = field(default_factory=list)  # create -> completed, seen by the client
    accepted: list[str] = field(default_factory=list)
    completed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    max_queue_depth: int = 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def timed_call(request: Awaitable[httpx.Response], label: str, samples_ms: list[float],
                     tally: Tally) -> httpx.Response | None:
    """Await one API call: its latency goes to `samples_ms`; a transport error or a non-200
    answer goes to `tally.errors` and gives None."""
    started = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as exc:
        tally.errors.append(f"{label}: {type(exc).__name__}: {exc}")
        return None
    samples_ms.append((time.perf_counter() - started) * 1000)
    if response.status_code != 200:
        tally.errors.append(f"{label} {response.status_code}: {response.text[:200]}")
        return None
    return response


async def client_loop(url: str, key: str, tally: Tally, budget: list[int], stop_at: float, poll_s: float) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < stop_at and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            response = await timed_call(client.post("/v1/videos", json=TINY_JOB), "create", tally.create_ms, tally)
            if response is None:
                continue
            video_id = response.json()["id"]
            tally.accepted.append(video_id)
            await follow(client, video_id, started, tally, poll_s)


async def follow(client: httpx.AsyncClient, video_id: str, started: float, tally: Tally, poll_s: float,
                 timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
        response = await timed_call(client.get(f"/v1/videos/{video_id}"), "poll", tally.poll_ms, tally)
        if response is None:
            continue
        video = response.json()
        if video["status"] == "failed":
            tally.failed[video_id] = f"{video['error']['code']}: {video['error']['message']}"
            return
        if video["status"] == "completed":
            tally.job_s.append(time.perf_counter() - started)
            t0 = time.perf_counter()
            content = await client.get(f"/v1/videos/{video_id}/content")
            tally.download_ms.append((time.perf_counter() - t0) * 1000)
            if content.status_code != 200 or content.content[4:8] != b"ftyp":
                tally.errors.append(f"content {video_id}: {content.status_code}, {content.content[:8]!r}")
            else:
                tally.completed.add(video_id)
            return


async def watch_queue(redis_url: str, tally: Tally, done: asyncio.Event) -> None:
    client = redis.Redis.from_url(redis_url)
    while not done.is_set():
        depth = sum(client.llen(q) for q in client.scan_iter(match="video.*", _type="list"))
        tally.max_queue_depth = max(tally.max_queue_depth, depth)
        await asyncio.sleep(0.5)


def queue_depth(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    return sum(client.llen(q) for q in client.scan_iter(match="video.*", _type="list"))


async def drive(url: str, keys: list[str], redis_url: str, args: argparse.Namespace) -> tuple[Tally, float, float]:
    tally, budget, done = Tally(), [args.jobs], asyncio.Event()
    started = time.monotonic()
    stop_at = started + args.duration_s
    watcher = asyncio.create_task(watch_queue(redis_url, tally, done))
    clients = [client_loop(url, key, tally, budget, stop_at, args.poll_s) for key in keys]
    try:
        await asyncio.wait_for(asyncio.gather(*clients), timeout=args.duration_s + args.drain_s)
    except asyncio.TimeoutError:
        tally.errors.append(f"clients still waiting {args.drain_s} s after the submit window closed")
    done.set()
    await watcher
    return tally, time.monotonic() - started, stop_at


def report(tally: Tally, wall_s: float, args: argparse.Namespace, drained: bool, cpu: str) -> str:
    lost = [i for i in tally.accepted if i not in tally.completed and i not in tally.failed]
    rows = [
        ("machine", cpu),
        ("clients / workers / poll interval", f"{args.clients} / {args.workers} / {args.poll_s} s"),
        ("wall time (submit window + drain)", f"{wall_s:.0f} s"),
        ("jobs accepted / completed / failed / lost", f"{len(tally.accepted)} / {len(tally.completed)} / "
                                                      f"{len(tally.failed)} / {len(lost)}"),
        ("errors (non-2xx, transport, bad MP4)", str(len(tally.errors))),
        ("queue drained at the end", "yes" if drained else "NO"),
        ("max queue depth (broker messages)", str(tally.max_queue_depth)),
        ("throughput", f"{len(tally.completed) / wall_s * 60:.1f} videos/min"),
        ("job latency p50 / max (create -> completed)", f"{pct(tally.job_s, 50):.1f} s / {max(tally.job_s, default=float('nan')):.1f} s"),
        ("create latency p50 / p99", f"{pct(tally.create_ms, 50):.1f} ms / {pct(tally.create_ms, 99):.1f} ms"),
        ("poll latency p50 / p99 (n)", f"{pct(tally.poll_ms, 50):.1f} ms / {pct(tally.poll_ms, 99):.1f} ms ({len(tally.poll_ms)})"),
        ("poll rate", f"{len(tally.poll_ms) / wall_s:.1f} /s"),
        ("MP4 download p50 / p99", f"{pct(tally.download_ms, 50):.1f} ms / {pct(tally.download_ms, 99):.1f} ms"),
    ]
    lines = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    for error in tally.errors[:10]:
        lines.append(f"  - error: {error}")
    for video_id, why in list(tally.failed.items())[:10]:
        lines.append(f"  - failed {video_id}: {why}")
    return "\n".join(lines)


def cpu_name() -> str:
    import os

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    return f"{os.cpu_count()} cores, {model}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=40, help="videos created in all (a hard bound)")
    parser.add_argument("--duration-s", type=float, default=180, help="no new videos after this")
    parser.add_argument("--drain-s", type=float, default=300, help="then the queue must drain within this")
    parser.add_argument("--poll-s", type=float, default=0.25, help="each client's poll interval")
    parser.add_argument("--workers", type=int, default=2, help="CPU workers to start (ignored with --url)")
    parser.add_argument("--url", default=None, help="a running gateway (then also --key and --redis-url)")
    parser.add_argument("--key", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs)")
    args = parser.parse_args()
    if args.url:
        if not (args.key and args.redis_url):
            parser.error("--url needs --key and --redis-url")
        tally, wall_s, _ = asyncio.run(drive(args.url, [args.key] * args.clients, args.redis_url, args))
        drained = queue_depth(args.redis_url) == 0
        print(report(tally, wall_s, args, drained, cpu_name()))
        return 0 if not tally.errors and drained and len(tally.completed) == len(tally.accepted) else 1
    # Operator settings for a load test: limits high enough that only real errors show.
    overrides = {"SPACETIME_GATEWAY_PROCESSES": "1", "SPACETIME_RATE_LIMIT_PER_MINUTE": "100000",
                 "SPACETIME_CREATE_LIMIT_PER_MINUTE": "1000", "SPACETIME_MAX_ACTIVE_JOBS": "8"}
    with scratch_dir(args.keep) as tmp, ComposeStack(tmp, overrides=overrides) as stack:
        stack.start(workers=args.workers)
        from service.keys import create_key  # what `spacetime keys create` does, once per client

        admin = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        keys = [create_key(admin, stack.env_file["SPACETIME_KEY_PEPPER"], f"load-{i}")[1] for i in range(args.clients)]
        tally, wall_s, _ = asyncio.run(drive(stack.url, keys, stack.redis_url, args))
        drained = queue_depth(stack.redis_url) == 0
    print(report(tally, wall_s, args, drained, cpu_name()))
    return 0 if not tally.errors and drained and len(tally.completed) == len(tally.accepted) else 1


if __name__ == "__main__":
    sys.exit(main())
