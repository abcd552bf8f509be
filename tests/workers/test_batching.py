"""Batching with a real worker process (SPACETIME_MAX_BATCH=3): queued jobs of one model and clip
shape run as one batched denoise, each job's frames are the ones its seed gives alone, and the
Celery messages of jobs a batch took are no-ops when they arrive. `spacetime-tiny-batch` is served
only by the worker started here, so its jobs wait in the queue until it starts."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import redis
from celery import Celery

from tests.conftest import Stack, wait_for_worker, wait_status
from tests.workers.test_overlap import log_records, start_worker_module
from workers.embedded import stop
from workers.media import decode_mp4

# guidance given: the batch model's catalogue default (tests/conftest.py) and spacetime-tiny's differ
BATCH = {"model": "spacetime-tiny-batch", "prompt": "a red circle moving left", "seconds": "1", "size": "128x128",
         "num_inference_steps": 3, "guidance_scale": 5.0}


def test_queued_jobs_of_one_shape_run_as_one_batch(stack: Stack, tmp_path: Path) -> None:
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stack.client() as c:
        prompts = ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]
        alike = [c.post("/v1/videos", json={**BATCH, "prompt": p, "seed": 10 + i}).json()["id"]
                 for i, p in enumerate(prompts)]
        longer = c.post("/v1/videos", json={**BATCH, "seconds": "2", "seed": 20}).json()["id"]  # another shape
        alone = c.post("/v1/videos", json={**BATCH, "model": "spacetime-tiny", "prompt": prompts[1],
                                           "seed": 11}).json()["id"]  # the session worker, unbatched
        worker = start_worker_module("workers.cli", {**stack.env, "SPACETIME_MAX_BATCH": "3"}, "spacetime-tiny-batch",
                                     tmp_path / "batch-worker.log", "batcher")
        try:
            wait_for_worker(stack.redis_url, "spacetime-tiny-batch", procs=[worker])
            for video_id in [*alike, longer, alone]:
                wait_status(c, video_id, ("completed",), timeout_s=180)
            time.sleep(1.0)  # the batched jobs' own messages follow the batch
            logs = log_records(worker)
            started = {x["job_id"]: x["batch"] for x in logs if x.get("msg") == "generation started"}
            assert started == {alike[0]: alike[1:], longer: []}  # one batched call, and the other shape alone
            not_run = {x["job_id"]: x["msg"] for x in logs if x.get("msg", "").startswith("job not run")}
            assert set(not_run) == set(alike[1:]), not_run  # their messages claimed nothing
            assert all(r.hget(f"st:job:{v}", "attempts") == "1" for v in [*alike, longer])

            clips = {}
            for video_id in (alike[1], alone):
                (tmp_path / f"{video_id}.mp4").write_bytes(c.get(f"/v1/videos/{video_id}/content").content)
                clips[video_id] = decode_mp4(tmp_path / f"{video_id}.mp4")[0].astype(int)
            assert clips[alike[1]].shape == (9, 128, 128, 3)
            # Same prompt and seed, batched or alone: the same clip (the batch may round the last
            # float bit differently, so a pixel may move by a level before the lossy encode).
            assert np.abs(clips[alike[1]] - clips[alone]).mean() < 0.5

            # A late redelivery of a batched job's message changes nothing either.
            completed_at = r.hget(f"st:job:{alike[2]}", "completed_at")
            Celery(broker=stack.redis_url).send_task("spacetime.generate_video", args=[alike[2]],
                                                     queue="video.spacetime-tiny-batch")
            time.sleep(1.5)
            assert r.hget(f"st:job:{alike[2]}", "attempts") == "1"
            assert r.hget(f"st:job:{alike[2]}", "completed_at") == completed_at
        finally:
            stop(worker.proc, "batch worker", grace_s=10)
