"""Prometheus metrics. Worker-side timings are observed into Redis (every worker process adds to
the same buckets) and the gateway renders them with the live job counts at scrape time, so one
`/metrics` endpoint covers the whole deployment without a push gateway."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

import redis
import redis.asyncio as aioredis

STEP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GENERATION_BUCKETS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

# name -> (help, buckets); the Redis hash per (name, model) holds bucket counts, sum and count
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "spacetime_denoise_step_seconds": ("Latency of one denoising step", STEP_BUCKETS_S),
    "spacetime_generation_seconds": ("Wall time of one video generation, load to stored MP4", GENERATION_BUCKETS_S),
}
STATUSES = ("queued", "in_progress", "completed", "failed")


def _hist_key(name: str, model: str) -> str:
    return f"st:hist:{name}:{model}"


def observe(client: redis.Redis | redis.client.Pipeline, name: str, model: str, value_s: float) -> None:
    """Add one observation (blocking client; used by workers)."""
    _, buckets = HISTOGRAMS[name]
    key = _hist_key(name, model)
    pipe = client.pipeline(transaction=False) if isinstance(client, redis.Redis) else client
    for bound in buckets:
        if value_s <= bound:
            pipe.hincrby(key, f"le:{bound}", 1)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", value_s)
    if isinstance(client, redis.Redis):
        pipe.execute()


class _Snapshot(Collector):
    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.families


async def render(client: aioredis.Redis, models: list[str], live: dict[str, int]) -> bytes:
    """The exposition text for /metrics."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall("st:stats:status")
    for name in models:
        pipe.zcard(f"st:queue:{name}")
    for hist in HISTOGRAMS:
        for name in models:
            pipe.hgetall(_hist_key(hist, name))
    results = await pipe.execute()
    counts, depths, hists = results[0], results[1 : 1 + len(models)], results[1 + len(models) :]

    jobs = GaugeMetricFamily("spacetime_jobs", "Jobs by status (records currently in Redis)", labels=["status"])
    for status in STATUSES:
        jobs.add_metric([status], max(0, int(counts.get(status, 0))))
    depth = GaugeMetricFamily("spacetime_queue_depth", "Queued jobs per model", labels=["model"])
    workers = GaugeMetricFamily("spacetime_live_workers", "Workers with a live heartbeat per model", labels=["model"])
    for name, n in zip(models, depths):
        depth.add_metric([name], n)
        workers.add_metric([name], live.get(name, 0))
    families: list = [jobs, depth, workers]
    i = 0
    for hist, (help_text, buckets) in HISTOGRAMS.items():
        family = HistogramMetricFamily(hist, help_text, labels=["model"])
        for name in models:
            raw = hists[i]
            i += 1
            cumulative = [(str(b), int(raw.get(f"le:{b}", 0))) for b in buckets]
            cumulative.append(("+Inf", int(raw.get("count", 0))))
            family.add_metric([name], cumulative, float(raw.get("sum", 0.0)))
        families.append(family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)
