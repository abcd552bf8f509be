"""The worker end to end: the real gateway, a real Celery worker process running the real tiny
pipeline, a real Redis. Clips are 1 s at 128x128 with few steps to keep this fast."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import redis

from service import webhooks
from tests.conftest import WEBHOOK_SECRET, Stack, wait_status
from workers.embedded import free_port
from workers.media import decode_mp4

SHORT = {"prompt": "a red circle moving left", "seconds": "1", "size": "128x128", "num_inference_steps": 3}


def test_video_completes_with_outputs_metadata_and_metrics(stack: Stack, tmp_path) -> None:
    with stack.client() as c:
        video = c.post("/v1/videos", json={**SHORT, "seed": 7}).json()
        done = wait_status(c, video["id"], ("completed",))
        assert done["progress"] == 100 and done["seed"] == 7
        assert done["completed_at"] >= done["created_at"] and done["expires_at"] > done["completed_at"]
        assert "openai-poll-after-ms" not in c.get(f"/v1/videos/{video['id']}").headers

        mp4 = c.get(f"/v1/videos/{video['id']}/content")
        assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
        assert mp4.headers["accept-ranges"] == "bytes"
        (tmp_path / "v.mp4").write_bytes(mp4.content)
        frames, fps = decode_mp4(tmp_path / "v.mp4")
        assert frames.shape == (9, 128, 128, 3) and fps == 8  # 1 s * 8 fps + 1
        assert frames.std() > 0  # a picture, not a blank

        part = c.get(f"/v1/videos/{video['id']}/content", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == mp4.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(mp4.content)}"
        tail = c.get(f"/v1/videos/{video['id']}/content", headers={"Range": "bytes=-50"})
        assert tail.content == mp4.content[-50:]
        beyond = c.get(f"/v1/videos/{video['id']}/content", headers={"Range": f"bytes={len(mp4.content)}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(mp4.content)}"
        assert beyond.json()["error"]["code"] == "range_not_satisfiable"

        thumb = c.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
        assert thumb.headers["content-type"] == "image/webp" and thumb.content[8:12] == b"WEBP"
        sheet = c.get(f"/v1/videos/{video['id']}/content", params={"variant": "spritesheet"})
        assert sheet.headers["content-type"] == "image/jpeg" and sheet.content[:2] == b"\xff\xd8"

        files = sorted(p.name for p in (stack.data_dir / video["id"]).iterdir())
        assert files == ["metadata.json", "provenance.json", "spritesheet.jpg", "thumbnail.webp", "video.mp4"]
        prov = c.get(f"/v1/videos/{video['id']}/provenance").json()
        assert prov["state"] == "trusted", prov  # signed by the local CA, checked against it
        from workers.provenance import verify

        assert verify(tmp_path / "v.mp4")["state"] in ("valid", "trusted")  # the downloaded bytes carry the manifest
        meta = json.loads((stack.data_dir / video["id"] / "metadata.json").read_text())
        assert meta["seed"] == "7" and meta["num_frames"] == "9" and len(meta["weights_hash"]) == 64

        text = c.get("/metrics").text
        assert 'spacetime_generation_seconds_count{model="spacetime-tiny"}' in text
        steps = [line for line in text.splitlines() if line.startswith('spacetime_denoise_step_seconds_count{model="spacetime-tiny"}')]
        assert float(steps[0].split()[-1]) >= 3
        ready = c.get("/readyz").json()
        assert ready["models"]["spacetime-tiny"]["ready"] is True

        # The same seed and parameters reproduce the same frames (the file differs: its metadata names the job).
        again = c.post("/v1/videos", json={**SHORT, "seed": 7}).json()
        wait_status(c, again["id"], ("completed",))
        (tmp_path / "again.mp4").write_bytes(c.get(f"/v1/videos/{again['id']}/content").content)
        assert np.array_equal(decode_mp4(tmp_path / "again.mp4")[0], frames)

        # Outputs expire: once expires_at has passed the sweeper deletes the files and the
        # content answers 410 while the record stays. (The TTL is a day here, so its deadline
        # is moved into the past in the expiry index the sweeper reads.)
        r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        assert int(r.zscore("st:expiry", again["id"])) == c.get(f"/v1/videos/{again['id']}").json()["expires_at"]
        r.zadd("st:expiry", {again["id"]: 1})
        deadline = time.monotonic() + 10
        while (stack.data_dir / again["id"]).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (stack.data_dir / again["id"]).exists()
        gone = c.get(f"/v1/videos/{again['id']}/content")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "video_expired"
        assert c.get(f"/v1/videos/{again['id']}").json()["status"] == "completed"
        assert (stack.data_dir / video["id"] / "video.mp4").exists()  # only the expired one went


def test_events_stream_progress_to_completion(stack: Stack) -> None:
    with stack.client() as c:
        video = c.post("/v1/videos", json={**SHORT, "num_inference_steps": 6}).json()
        names, progress = [], []
        with c.stream("GET", f"/v1/videos/{video['id']}/events") as stream:
            name = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    names.append(name)
                    progress.append(json.loads(line[6:])["progress"])
        assert names[-1] == "completed" and progress[-1] == 100
        assert "progress" in names or "in_progress" in names
        assert progress == sorted(progress)


def test_cancel_a_running_video_stops_within_a_step_and_frees_the_worker(stack: Stack) -> None:
    with stack.client() as c:
        video = c.post("/v1/videos", json={**SHORT, "num_inference_steps": 100}).json()
        running = wait_status(c, video["id"], ("in_progress",), min_progress=2)
        assert c.post(f"/v1/videos/{video['id']}/cancel").status_code == 200
        at_cancel = c.get(f"/v1/videos/{video['id']}").json()["progress"]
        failed = wait_status(c, video["id"], ("failed",), timeout_s=30)
        # Counted in steps, not seconds (a loaded machine stretches a step): the worker checks the
        # cancel flag at every step, so at most one more step (1 % of 100) is reported after it.
        assert failed["error"]["code"] == "cancelled"
        assert failed["progress"] <= at_cancel + 1 < 95
        assert running["progress"] >= 2
        assert not (stack.data_dir / video["id"]).exists()
        nxt = c.post("/v1/videos", json=SHORT).json()
        assert wait_status(c, nxt["id"], ("completed",))["progress"] == 100


def test_a_job_over_its_time_limit_fails_as_timeout_and_the_worker_goes_on(stack: Stack) -> None:
    # spacetime-tiny-capped: the tiny weights on spacetime-tiny's queue with a 2 s limit per job,
    # and 100 steps of a 4 s clip, far more than 2 s of work.
    with stack.client() as c:
        video = c.post("/v1/videos", json={"model": "spacetime-tiny-capped", "prompt": "a slow one"}).json()
        failed = wait_status(c, video["id"], ("failed",), timeout_s=60)
        assert failed["error"]["code"] == "timeout" and "2 s" in failed["error"]["message"]
        assert not (stack.data_dir / video["id"]).exists()
        nxt = c.post("/v1/videos", json=SHORT).json()
        assert wait_status(c, nxt["id"], ("completed",))["progress"] == 100
        ready = c.get("/readyz").json()["models"]
        assert ready["spacetime-tiny-capped"]["ready"] is True  # served through spacetime-tiny's queue


def running_pid(r: redis.Redis, job_id: str, timeout_s: float = 30) -> int:
    """The pool process that claimed the job, as soon as it has (the record's `host:pid` worker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if r.hget(f"st:job:{job_id}", "status") == "in_progress":
            return int(r.hget(f"st:job:{job_id}", "worker").rsplit(":", 1)[1])
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} never started")


def gone(pid: int) -> bool:
    """Exited and reaped, or a zombie its parent has not reaped yet."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def test_a_job_that_ignores_its_soft_limit_fails_at_the_hard_limit_and_is_not_rerun(stack: Stack) -> None:
    # The soft limit is a signal that Python handles between bytecodes: a pool process stuck in a
    # native call (or frozen) never handles it. SIGSTOP freezes the pool process for real, before
    # its 2 s soft limit; its heartbeat stops too. Celery's hard limit (2 + 10 s) then SIGKILLs it,
    # and the main process's JobRequest.on_timeout must fail the job as `timeout`, once: without
    # it the job stays in_progress, the reaper requeues it and a fresh pool process runs it again.
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stack.client() as c:
        video = c.post("/v1/videos", json={"model": "spacetime-tiny-capped", "prompt": "a frozen one"}).json()
        pid = running_pid(r, video["id"])
        os.kill(pid, signal.SIGSTOP)
        try:
            assert r.hget(f"st:job:{video['id']}", "status") == "in_progress"  # frozen before the soft limit
            failed = wait_status(c, video["id"], ("failed",), timeout_s=60)
        finally:
            if not gone(pid):
                os.kill(pid, signal.SIGCONT)  # let a failing test leave a working worker behind
        assert failed["error"]["code"] == "timeout"
        assert "2 s limit" in failed["error"]["message"] and "12 s hard limit" in failed["error"]["message"]
        deadline = time.monotonic() + 10
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(pid)  # killed by the hard limit: the failure came from the main process

        # Past the frozen process's heartbeat TTL (3 s) and a few reaper periods: never requeued.
        nxt = c.post("/v1/videos", json=SHORT).json()  # a fresh pool process takes it
        assert wait_status(c, nxt["id"], ("completed",))["progress"] == 100
        time.sleep(4.0)
        record = r.hgetall(f"st:job:{video['id']}")
        assert record["status"] == "failed" and record["attempts"] == "1"
        assert not r.hexists("st:running", video["id"]) and not (stack.data_dir / video["id"]).exists()


def test_deleting_a_running_video_leaves_no_files(stack: Stack) -> None:
    with stack.client() as c:
        video = c.post("/v1/videos", json={**SHORT, "num_inference_steps": 100}).json()
        wait_status(c, video["id"], ("in_progress",), min_progress=2)
        assert c.delete(f"/v1/videos/{video['id']}").status_code == 200
        nxt = c.post("/v1/videos", json=SHORT).json()  # runs after the deleted one stopped
        wait_status(c, nxt["id"], ("completed",))
        assert not (stack.data_dir / video["id"]).exists()
        assert c.get(f"/v1/videos/{video['id']}").status_code == 404


class Receiver:
    """A local webhook endpoint that fails its first `fail_first` deliveries with HTTP 500."""

    def __init__(self, fail_first: int) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 500 if len(receiver.deliveries) < fail_first else 204
                receiver.deliveries.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.port = free_port()
        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def wait(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.deliveries) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.deliveries) >= count, self.deliveries


def test_webhook_on_completion_is_signed_and_retried_with_backoff(stack: Stack) -> None:
    receiver = Receiver(fail_first=2)
    with stack.client() as c:
        video = c.post("/v1/videos", json={**SHORT, "webhook_url": receiver.url}).json()
        wait_status(c, video["id"], ("completed",))
        receiver.wait(3)
    receiver.server.shutdown()
    assert [status for _, _, status in receiver.deliveries] == [500, 500, 204]
    payloads = [webhooks.verify(WEBHOOK_SECRET, headers, body) for headers, body, _ in receiver.deliveries]
    assert {p["type"] for p in payloads} == {"video.completed"}
    assert payloads[-1]["data"]["id"] == video["id"] and payloads[-1]["data"]["status"] == "completed"
    assert len({h["webhook-id"] for h, _, _ in receiver.deliveries}) == 1  # same message, retried
    gaps = np.diff([int(h["webhook-timestamp"]) for h, _, _ in receiver.deliveries])
    assert (gaps >= 0).all()


def test_webhook_on_failure_of_a_cancelled_queued_video(stack: Stack) -> None:
    receiver = Receiver(fail_first=0)
    with stack.client() as c:
        body = {"model": "spacetime-parked", "prompt": "x", "webhook_url": receiver.url}
        video = c.post("/v1/videos", json=body).json()
        c.post(f"/v1/videos/{video['id']}/cancel")
        receiver.wait(1)
    receiver.server.shutdown()
    headers, raw, _ = receiver.deliveries[0]
    payload = webhooks.verify(WEBHOOK_SECRET, headers, raw)
    assert payload["type"] == "video.failed" and payload["data"]["error"]["code"] == "cancelled"
