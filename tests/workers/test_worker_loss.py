"""A worker SIGKILLed mid-job loses no job and leaves exactly one video; a cancelled queued job
never runs. Uses `spacetime-tiny-b`, a model only the workers started here serve."""

from __future__ import annotations

import time

import redis
from celery import Celery

from tests.conftest import Stack, kill_group, wait_for_worker, wait_status

MODEL_B = {"model": "spacetime-tiny-b", "prompt": "a yellow star moving up", "size": "128x128"}


def test_worker_killed_mid_job_the_job_completes_on_a_second_worker(stack: Stack, start_worker) -> None:
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stack.client() as c:
        # Queued, then cancelled, before any worker serves the model: it must never run.
        parked = c.post("/v1/videos", json={**MODEL_B, "seconds": "1"}).json()
        assert c.post(f"/v1/videos/{parked['id']}/cancel").json()["status"] == "failed"

        first = start_worker("spacetime-tiny-b")
        wait_for_worker(stack.redis_url, "spacetime-tiny-b", procs=[first])
        video = c.post("/v1/videos", json={**MODEL_B, "seconds": "1", "num_inference_steps": 30}).json()
        wait_status(c, video["id"], ("in_progress",), min_progress=3, timeout_s=120)
        dead_worker = r.hget(f"st:job:{video['id']}", "worker")
        kill_group(first.proc)  # the worker and its pool process, mid-denoising

        second = start_worker("spacetime-tiny-b")
        done = wait_status(c, video["id"], ("completed",), timeout_s=180)
        record = r.hgetall(f"st:job:{video['id']}")
        assert record["worker"] != dead_worker and record["attempts"] == "2"
        logs = "".join(p.read_text(errors="replace") for p in first.log.parent.glob("worker*.log"))
        assert f'"msg": "requeued a job whose worker died", "job_id": "{video["id"]}"' in logs
        assert done["progress"] == 100

        # Exactly one video, under the job's own name, and no leftovers anywhere in storage.
        mp4s = [p for p in stack.data_dir.rglob("*.mp4") if video["id"] in str(p)]
        assert mp4s == [stack.data_dir / video["id"] / "video.mp4"]
        assert [p for p in (stack.data_dir / ".tmp").rglob("*") if p.is_file()] == []

        # The message of the killed delivery may come back later (visibility timeout); a
        # redelivery of a finished job is a no-op: nothing changes.
        Celery(broker=stack.redis_url).send_task("spacetime.generate_video", args=[video["id"]],
                                                 queue="video.spacetime-tiny-b")
        time.sleep(1.0)
        assert r.hget(f"st:job:{video['id']}", "attempts") == "2"
        assert c.get(f"/v1/videos/{video['id']}").json()["completed_at"] == done["completed_at"]

        never = r.hgetall(f"st:job:{parked['id']}")
        assert never["status"] == "failed" and never["attempts"] == "0" and "started_at" not in never
        assert not (stack.data_dir / parked["id"]).exists()
