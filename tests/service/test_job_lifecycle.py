"""The job state machine (service/jobscripts.py) on a real Redis, driven the way a gateway and
workers drive it: claims, heartbeats, requeues, the attempt cap, cancel and finish races."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from service.jobs import JobStore, WorkerJobs, worker_key

SPEC = {"model": "spacetime-parked", "prompt": "p", "negative_prompt": "", "seconds": "1", "size": "128x128",
        "seed": 1, "num_inference_steps": 2, "guidance_scale": 5.0, "fps": 8, "webhook_url": None}


def create(redis_url: str, owner: str = "lifecycle", spec: dict | None = None) -> str:
    async def go() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            result = await JobStore(client).create(owner, spec or SPEC, max_active=100, idempotency_key=None,
                                                   idem_ttl_s=60)
        finally:
            await client.aclose()
        return result.job_id

    return asyncio.run(go())


def cancel(redis_url: str, job_id: str) -> str:
    async def go() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await JobStore(client).cancel(job_id)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture()
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    # These stand-in workers share the session's Redis: their heartbeats must not outlive the test,
    # or /readyz in a later test would count them as live workers.
    for key in client.scan_iter(match=worker_key("lc-*")):
        client.delete(key)


def worker(r: redis.Redis, name: str, alive: bool = True) -> WorkerJobs:
    w = WorkerJobs(r, name)
    if alive:
        w.heartbeat(["lifecycle-test-model"], ttl_s=30)  # a model no other test asks /readyz about
    return w


def test_claim_progress_complete(redis_url: str, r: redis.Redis) -> None:
    job = create(redis_url)
    a = worker(r, "lc-a")
    assert a.claim(job, max_attempts=3) == ("claimed", "1")
    assert r.hget(f"st:job:{job}", "status") == "in_progress" and r.hget("st:running", job) == "lc-a"
    assert a.report_progress(job, 50) == 1
    assert a.complete(job, expires_at=2**31, assets={}) == "ok"
    record = r.hgetall(f"st:job:{job}")
    assert (record["status"], record["progress"]) == ("completed", "100")
    assert not r.sismember("st:active:lifecycle", job) and r.hget("st:running", job) is None
    assert a.claim(job, max_attempts=3)[0] == "done"  # a redelivery changes nothing
    assert a.fail(job, "x", "y") == "completed"  # nor can a late failure overwrite it


def test_a_live_holder_keeps_its_job_and_a_dead_ones_job_is_requeued(redis_url: str, r: redis.Redis) -> None:
    job = create(redis_url)
    a, b = worker(r, "lc-live-a"), worker(r, "lc-live-b")
    a.claim(job, max_attempts=3)
    assert b.claim(job, max_attempts=3) == ("busy", "lc-live-a")
    assert b.requeue(job, "lc-live-a") is False  # still heartbeating
    r.delete(worker_key("lc-live-a"))  # a dies: its heartbeat lapses
    assert (job, "lc-live-a") in b.orphans()
    assert b.requeue(job, "lc-live-a") is True
    assert r.hget(f"st:job:{job}", "status") == "queued" and r.zrank("st:queue:spacetime-parked", job) is not None
    assert b.claim(job, max_attempts=3) == ("claimed", "2")
    # a was only slow, not dead: it learns at its next step that b holds the job now, and it
    # can neither finish nor fail b's run.
    assert a.report_progress(job, 60) == 2
    assert a.complete(job, expires_at=2**31, assets={}) == "superseded"
    assert a.fail(job, "cancelled", "x") == "superseded"
    assert b.report_progress(job, 60) == 1 and b.complete(job, expires_at=2**31, assets={}) == "ok"


def test_attempt_cap_fails_the_job_as_worker_lost(redis_url: str, r: redis.Redis) -> None:
    job = create(redis_url)
    for n in range(2):
        dead = worker(r, f"lc-dead-{n}", alive=False)
        assert dead.claim(job, max_attempts=2)[0] == "claimed"  # then it dies without finishing
    last = worker(r, "lc-dead-last", alive=False)
    assert last.claim(job, max_attempts=2) == ("exhausted", "3")
    record = r.hgetall(f"st:job:{job}")
    assert record["status"] == "failed" and record["error_code"] == "worker_lost" and "2 attempts" in record["error_message"]


def test_cancel_of_a_running_job_stops_it_at_the_next_progress_report(redis_url: str, r: redis.Redis) -> None:
    job = create(redis_url)
    a = worker(r, "lc-cancel")
    a.claim(job, max_attempts=3)
    assert cancel(redis_url, job) == "requested"
    assert a.report_progress(job, 10) == 0
    assert a.fail(job, "cancelled", "The video was cancelled.") == "ok"
    assert cancel(redis_url, job) == "failed"
    queued = create(redis_url)
    assert cancel(redis_url, queued) == "cancelled"
    assert a.claim(queued, max_attempts=3)[0] == "done"  # a queued cancelled job never runs
    assert cancel(redis_url, "video_missing") == "missing"


def test_a_hard_killed_run_fails_its_job_once_and_only_its_own(redis_url: str, r: redis.Redis) -> None:
    # FAIL_KILLED, as workers/timeouts.py calls it from the worker's main process on behalf of a pool
    # process that Celery's hard time limit killed (its worker id, not the main process's).
    held = create(redis_url)
    killed = worker(r, "lc-killed")
    killed.claim(held, max_attempts=3)
    assert killed.fail_killed(held, "timeout", "over the limit") == "ok"
    record = r.hgetall(f"st:job:{held}")
    assert (record["status"], record["error_code"], record["attempts"]) == ("failed", "timeout", "1")
    assert r.hget("st:running", held) is None and not r.sismember("st:active:lifecycle", held)
    assert killed.fail_killed(held, "timeout", "again") == "failed"  # once only
    assert killed.claim(held, max_attempts=3)[0] == "done"  # the requeued delivery never runs

    # Requeued by the reaper (the frozen process stopped heartbeating) and not claimed since: failed.
    requeued = create(redis_url)
    frozen = worker(r, "lc-frozen")
    frozen.claim(requeued, max_attempts=3)
    r.delete(worker_key("lc-frozen"))
    assert worker(r, "lc-reaper").requeue(requeued, "lc-frozen") is True
    assert frozen.fail_killed(requeued, "timeout", "over the limit") == "ok"
    assert r.zrank("st:queue:spacetime-parked", requeued) is None
    assert r.hget(f"st:job:{requeued}", "error_code") == "timeout"

    # Claimed by another worker since: that run is left alone.
    taken = create(redis_url)
    slow = worker(r, "lc-slow")
    slow.claim(taken, max_attempts=3)
    r.delete(worker_key("lc-slow"))
    other = worker(r, "lc-other")
    other.requeue(taken, "lc-slow")
    other.claim(taken, max_attempts=3)
    assert slow.fail_killed(taken, "timeout", "x") == "superseded"
    assert r.hget(f"st:job:{taken}", "status") == "in_progress"

    # Completed, cancelled or deleted jobs are not touched; a cancel requested mid-run wins.
    done = create(redis_url)
    killed.claim(done, max_attempts=3)
    killed.complete(done, expires_at=2**31, assets={})
    assert killed.fail_killed(done, "timeout", "x") == "completed"
    cancelled = create(redis_url)
    assert cancel(redis_url, cancelled) == "cancelled"
    assert killed.fail_killed(cancelled, "timeout", "x") == "failed"
    assert r.hget(f"st:job:{cancelled}", "error_code") == "cancelled"
    asked = create(redis_url)
    killed.claim(asked, max_attempts=3)
    assert cancel(redis_url, asked) == "requested"
    assert killed.fail_killed(asked, "timeout", "x") == "ok"
    assert r.hget(f"st:job:{asked}", "error_code") == "cancelled"
    assert killed.fail_killed("video_missing", "timeout", "x") == "missing"


def test_batch_claim_takes_queued_look_alikes_only(redis_url: str, r: redis.Redis) -> None:
    # BATCH_CLAIM: queued jobs of the leader's model and clip shape, oldest first, up to the cap;
    # the claimed jobs' own deliveries then find them held (busy) by the batching worker.
    spec = {**SPEC, "model": "lifecycle-batch-model"}  # a queue of this test's own
    leader, alike, other_shape, cancelled, alike2, alike3, over_cap = (create(redis_url, spec=spec) for _ in range(7))
    r.hset(f"st:job:{other_shape}", "num_inference_steps", "9")
    cancel(redis_url, cancelled)
    a = worker(r, "lc-batch")
    assert a.claim(leader, max_attempts=3) == ("claimed", "1")
    assert a.claim_alike(leader, max_jobs=3, max_attempts=3) == [alike, alike2, alike3]
    for job in (alike, alike2, alike3):
        record = r.hgetall(f"st:job:{job}")
        assert (record["status"], record["worker"], record["attempts"]) == ("in_progress", "lc-batch", "1")
        assert r.hget("st:running", job) == "lc-batch" and r.zrank("st:queue:lifecycle-batch-model", job) is None
        assert a.claim(job, max_attempts=3) == ("busy", "lc-batch")  # its own message: a no-op
    assert r.hget(f"st:job:{other_shape}", "status") == "queued"
    assert r.hget(f"st:job:{cancelled}", "status") == "failed"
    assert r.hget(f"st:job:{over_cap}", "status") == "queued"  # beyond max_jobs
    assert a.claim_alike(leader, max_jobs=0, max_attempts=3) == []
    for job in (leader, alike, alike2, alike3):  # nothing left running for a reaper to requeue
        assert a.complete(job, expires_at=2**31, assets={}) == "ok"


def test_a_cancel_requested_before_completion_wins(redis_url: str, r: redis.Redis) -> None:
    # The video was being encoded when the cancel came: completing fails it as cancelled instead
    # (the worker then removes the files it stored).
    job = create(redis_url)
    a = worker(r, "lc-late-cancel")
    a.claim(job, max_attempts=3)
    assert cancel(redis_url, job) == "requested"
    assert a.complete(job, expires_at=2**31, assets={}) == "cancelled"
    record = r.hgetall(f"st:job:{job}")
    assert (record["status"], record["error_code"]) == ("failed", "cancelled")
    assert r.zscore("st:expiry", job) is None and r.hget("st:running", job) is None
