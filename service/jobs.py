"""Job records in Redis: a hash per job, a sorted set per owner, events on pub/sub.

`JobStore` (asyncio) is what the gateway uses; `WorkerJobs` (blocking) is what a worker uses
to claim, report progress and finish a job. Both run the atomic scripts in `jobscripts`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from service import jobscripts
from service.keys import AUTHORIZE_FN
from service.schemas import VideoError, VideoPublic

# Fields copied from the request into the record (all stored as strings).
SPEC_FIELDS = (
    "model", "prompt", "negative_prompt", "seconds", "size", "seed",
    "num_inference_steps", "guidance_scale", "fps", "quality", "webhook_url", "remixed_from_video_id", "strength",
)


# What makes jobs of one model the same clip shape, so that they can be denoised in one batch. A
# remix (it starts from its own source clip) never joins a batch: its source field differs from
# every plain job's, and a remix does not lead one (workers/tasks.claim_batch).
BATCH_FIELDS = ("size", "seconds", "fps", "num_inference_steps", "guidance_scale", "quality", "remixed_from_video_id")


def job_key(job_id: str) -> str:
    return f"{jobscripts.PREFIX}job:{job_id}"


def events_channel(job_id: str) -> str:
    return f"{jobscripts.PREFIX}events:{job_id}"


def worker_key(worker_id: str) -> str:
    return f"{jobscripts.PREFIX}worker:{worker_id}"


def new_job_id() -> str:
    return "video_" + secrets.token_hex(12)


def now_s() -> int:
    return int(time.time())


def fingerprint(spec: dict[str, Any]) -> str:
    """Idempotency: the same key with different parameters is an error, so hash the request
    as sent (before defaults: a server-drawn seed must not make a replay look different)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def to_public(record: dict[str, str], queue_position: int | None = None) -> VideoPublic:
    def opt_int(name: str) -> int | None:
        value = record.get(name)
        return int(value) if value else None

    error = None
    if record.get("status") == "failed":
        error = VideoError(
            code=record.get("error_code") or "generation_failed",
            message=record.get("error_message") or "The video could not be generated.",
        )
    return VideoPublic(
        id=record["id"],
        status=record["status"],  # type: ignore[arg-type]
        progress=int(record.get("progress") or 0),
        created_at=int(record["created_at"]),
        completed_at=opt_int("completed_at"),
        expires_at=opt_int("expires_at"),
        model=record["model"],
        prompt=record["prompt"],
        seconds=record["seconds"],
        size=record["size"],
        error=error,
        remixed_from_video_id=record.get("remixed_from_video_id") or None,
        seed=int(record["seed"]),
        negative_prompt=record.get("negative_prompt", ""),
        num_inference_steps=int(record["num_inference_steps"]),
        guidance_scale=float(record["guidance_scale"]),
        fps=int(record["fps"]),
        quality=record.get("quality") or "exact",  # records from before the field existed are exact
        strength=float(record["strength"]) if record.get("strength") else None,
        queue_position=queue_position if record.get("status") == "queued" else None,
    )


@dataclass
class CreateResult:
    outcome: str  # "created" | "existing" | "busy"
    job_id: str = ""
    fingerprint: str = ""
    active: int = 0


class JobStore:
    """The gateway's view of jobs (asyncio)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._create = client.register_script(jobscripts.CREATE)
        self._cancel = client.register_script(jobscripts.CANCEL)
        self._delete = client.register_script(jobscripts.DELETE)
        self._poll = client.register_script(jobscripts.poll_script(AUTHORIZE_FN))

    async def create(
        self, owner: str, spec: dict[str, Any], *, max_active: int, idempotency_key: str | None, idem_ttl_s: int,
        request_fingerprint: str = "",
    ) -> CreateResult:
        job_id, created_ms = new_job_id(), int(time.time() * 1000)
        fields: list[str] = ["id", job_id, "created_at", str(created_ms // 1000), "progress", "0", "attempts", "0"]
        for name in SPEC_FIELDS:
            if spec.get(name) is not None:
                fields += [name, str(spec[name])]
        idem = f"{jobscripts.PREFIX}idem:{owner}:{idempotency_key}" if idempotency_key else ""
        result = await self._create(
            args=[job_id, owner, created_ms, max_active, idem, request_fingerprint, idem_ttl_s, *fields]
        )
        if result[0] == "existing":
            return CreateResult("existing", job_id=result[1], fingerprint=result[2])
        if result[0] == "busy":
            return CreateResult("busy", active=int(result[1]))
        return CreateResult("created", job_id=job_id, fingerprint=request_fingerprint)

    async def get(self, job_id: str, owner: str | None = None) -> dict[str, str] | None:
        """The record, or None when missing or (with `owner`) belonging to someone else."""
        record = await self.redis.hgetall(job_key(job_id))
        if not record or (owner is not None and record.get("owner") != owner):
            return None
        return record

    async def poll(self, job_id: str, auth_args: list[str | int]) -> tuple[str, str, VideoPublic | None]:
        """Auth + rate limit + the video with its queue position, in one round trip (the status
        poll is what clients do most). Returns (owner, retry_after_s, video or None)."""
        flat = await self._poll(args=[*auth_args, job_id])
        owner, retry_s, rest = flat[0], flat[1], flat[2:]
        if not rest:
            return owner, retry_s, None
        record = dict(zip(rest[:-1:2], rest[1:-1:2]))
        if record.get("owner") != owner:
            return owner, retry_s, None
        position = int(rest[-1])
        return owner, retry_s, to_public(record, position if position >= 0 else None)

    async def queue_position(self, record: dict[str, str]) -> int | None:
        if record.get("status") != "queued":
            return None
        return await self.redis.zrank(f"{jobscripts.PREFIX}queue:{record['model']}", record["id"])

    async def public(self, record: dict[str, str]) -> VideoPublic:
        return to_public(record, await self.queue_position(record))

    async def list(self, owner: str, *, limit: int, after: str | None, order: str) -> tuple[list[dict[str, str]], bool]:
        """A page of the owner's records (newest first for order=desc) and whether more follow."""
        index = f"{jobscripts.PREFIX}owner:{owner}"
        start = 0
        if after:
            rank = await (self.redis.zrevrank(index, after) if order == "desc" else self.redis.zrank(index, after))
            if rank is None:
                return [], False
            start = rank + 1
        stop = start + limit  # one extra to learn has_more
        ids = await (self.redis.zrevrange(index, start, stop) if order == "desc" else self.redis.zrange(index, start, stop))
        has_more = len(ids) > limit
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids[:limit]:
            pipe.hgetall(job_key(job_id))
        records = [r for r in await pipe.execute() if r]
        return records, has_more

    async def cancel(self, job_id: str) -> str:
        return await self._cancel(args=[job_id, now_s(), "cancelled", "The video was cancelled."])

    async def delete(self, job_id: str) -> bool:
        return await self._delete(args=[job_id]) == "deleted"

    async def mark_failed(self, job_id: str, code: str, message: str) -> None:
        """Used when the job could not even be queued (broker down)."""
        await self.redis.hset(job_key(job_id), mapping={"cancel_requested": "1"})
        await self._cancel(args=[job_id, now_s(), code, message])

    async def status_counts(self) -> dict[str, int]:
        raw = await self.redis.hgetall(f"{jobscripts.PREFIX}stats:status")
        return {status: int(count) for status, count in raw.items()}

    async def queue_depths(self, models: list[str]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for name in models:
            pipe.zcard(f"{jobscripts.PREFIX}queue:{name}")
        return dict(zip(models, await pipe.execute()))

    async def live_workers(self, models: list[str]) -> dict[str, int]:
        """Model -> number of workers whose heartbeat has not expired."""
        live = {name: 0 for name in models}
        async for key in self.redis.scan_iter(match=f"{jobscripts.PREFIX}worker:*", count=500):
            info = await self.redis.get(key)
            if not info:
                continue
            for name in json.loads(info).get("models", []):
                if name in live:
                    live[name] += 1
        return live

    async def expired(self, now: int, batch: int = 100) -> list[str]:
        return await self.redis.zrangebyscore(f"{jobscripts.PREFIX}expiry", 0, now, start=0, num=batch)

    async def forget_expiry(self, job_id: str) -> None:
        await self.redis.zrem(f"{jobscripts.PREFIX}expiry", job_id)
        await self.redis.hset(job_key(job_id), "assets_expired", "1")


class WorkerJobs:
    """A worker's side of the job lifecycle (blocking redis client)."""

    def __init__(self, client: redis.Redis, worker_id: str) -> None:
        self.redis = client
        self.worker_id = worker_id
        self._claim = client.register_script(jobscripts.CLAIM)
        self._batch_claim = client.register_script(jobscripts.BATCH_CLAIM)
        self._progress = client.register_script(jobscripts.PROGRESS)
        self._finish = client.register_script(jobscripts.FINISH)
        self._requeue = client.register_script(jobscripts.REQUEUE)
        self._fail_killed = client.register_script(jobscripts.FAIL_KILLED)

    def get(self, job_id: str) -> dict[str, str] | None:
        return self.redis.hgetall(job_key(job_id)) or None

    def claim(self, job_id: str, max_attempts: int) -> tuple[str, str]:
        result = self._claim(args=[job_id, self.worker_id, now_s(), max_attempts, int(time.time() * 1000)])
        return result[0], (result[1] if len(result) > 1 else "")

    def claim_alike(self, job_id: str, max_jobs: int, max_attempts: int, window: int = 64) -> list[str]:
        """Claim up to `max_jobs` queued jobs of job_id's model and clip shape (BATCH_FIELDS), oldest
        first among the first `window` queued, to run in one batch with it (BATCH_CLAIM)."""
        if max_jobs < 1:
            return []
        now_ms = int(time.time() * 1000)
        return list(self._batch_claim(args=[job_id, self.worker_id, now_s(), max_attempts, now_ms, max_jobs, window,
                                            *BATCH_FIELDS]))

    def report_progress(self, job_id: str, progress: int) -> int:
        """Record progress. 1: go on; 0: cancelled or deleted, stop; 2: another worker holds
        the job now (this one's heartbeat lapsed), stop without touching the record."""
        return int(self._progress(args=[job_id, progress, self.worker_id]))

    def complete(self, job_id: str, expires_at: int, assets: dict[str, str]) -> str:
        fields = [x for kv in {"progress": "100", **assets}.items() for x in kv]
        return self._finish(args=[job_id, "completed", now_s(), expires_at, self.worker_id, *fields])

    def fail(self, job_id: str, code: str, message: str) -> str:
        return self._finish(args=[job_id, "failed", now_s(), "", self.worker_id,
                                  "error_code", code, "error_message", message[:500]])

    def fail_killed(self, job_id: str, code: str, message: str) -> str:
        """Fail a job this worker id's run cannot finish (its process was killed): see FAIL_KILLED."""
        return self._fail_killed(args=[job_id, self.worker_id, now_s(), code, message[:500]])

    def heartbeat(self, models: list[str], ttl_s: float) -> None:
        info = json.dumps({"models": models, "at": time.time()})
        self.redis.set(worker_key(self.worker_id), info, px=int(ttl_s * 1000))

    def stop_heartbeat(self) -> None:
        self.redis.delete(worker_key(self.worker_id))

    def orphans(self) -> list[tuple[str, str]]:
        """(job id, worker) pairs whose worker's heartbeat has expired."""
        running = self.redis.hgetall(f"{jobscripts.PREFIX}running")
        if not running:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for worker in running.values():
            pipe.exists(worker_key(worker))
        alive = pipe.execute()
        return [(job, worker) for (job, worker), up in zip(running.items(), alive) if not up]

    def requeue(self, job_id: str, dead_worker: str) -> bool:
        return bool(self._requeue(args=[job_id, dead_worker]))
