"""The encode overlap (workers/overlap.py) with real worker processes: a job's MP4 is encoded,
signed and stored on a background thread while the next job denoises, and nothing that held
before is lost: a job completes only with its files stored, a cancel during the encode leaves no
files, a process killed mid-encode has its job re-run and completed once, and a clean stop
finishes the encode first.

The gated worker (tests/workers/gated_worker.py) holds each job at the start of its background
stage until the test opens the job's gate; it alone serves `spacetime-tiny-gated`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis

from tests.conftest import ROOT, Proc, Stack, wait_for_worker, wait_status
from workers.embedded import stop
from workers.media import decode_mp4

SHORT = {"prompt": "a red circle moving left", "seconds": "1", "size": "128x128", "num_inference_steps": 3}
GATED = {**SHORT, "model": "spacetime-tiny-gated"}
GATE_ENV = "SPACETIME_TEST_GATE_DIR"  # read by tests/workers/gated_worker.py (not imported here: it loads the worker)


def start_worker_module(module: str, env: dict[str, str], models: str, log: Path, name: str) -> Proc:
    """`python -m <module> worker --models <models>` with one pool process, in its own session."""
    out = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", module, "worker", "--models", models, "--concurrency", "1",
                             "--name", f"{name}@test"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Proc(proc, log, name)


def log_records(proc: Proc) -> list[dict]:
    """The worker's JSON log lines."""
    records = []
    for line in proc.text().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


@dataclass
class Gated:
    proc: Proc
    gate: Path

    def entered(self, job_id: str, times: int = 1, timeout_s: float = 120) -> int:
        """Wait until the job reached the gate `times` times; the pid of the pool process there."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            path = self.gate / "entered"
            hits = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
            pids = [int(pid) for job, pid in hits if job == job_id]
            if len(pids) >= times:
                return pids[-1]
            if self.proc.proc.poll() is not None:
                raise RuntimeError(f"gated worker exited:\n{self.proc.text()[-3000:]}")
            time.sleep(0.02)
        raise TimeoutError(f"{job_id} never reached the encode gate:\n{self.proc.text()[-3000:]}")

    def open(self, job_id: str) -> None:
        (self.gate / job_id).touch()


@pytest.fixture(scope="module")
def gated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    gate = tmp_path_factory.mktemp("gate")
    env = {**stack.env, GATE_ENV: str(gate)}
    proc = start_worker_module("tests.workers.gated_worker", env, "spacetime-tiny-gated",
                               gate.parent / "gated-worker.log", "gated")
    wait_for_worker(stack.redis_url, "spacetime-tiny-gated", procs=[proc])
    yield Gated(proc, gate)
    if (gate / "entered").exists():  # let anything still held go, then stop
        for line in (gate / "entered").read_text().splitlines():
            (gate / line.split()[0]).touch()
    stop(proc.proc, "gated worker", grace_s=10)


def test_a_stream_of_jobs_completes_with_decodable_videos(stack: Stack, tmp_path: Path) -> None:
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stack.client() as c:
        ids = [c.post("/v1/videos", json={**SHORT, "num_inference_steps": 2, "seed": seed}).json()["id"]
               for seed in (1, 2, 3, 4)]
        clips = []
        for video_id in ids:
            assert wait_status(c, video_id, ("completed",), timeout_s=120)["progress"] == 100
            (tmp_path / f"{video_id}.mp4").write_bytes(c.get(f"/v1/videos/{video_id}/content").content)
            frames, fps = decode_mp4(tmp_path / f"{video_id}.mp4")
            assert frames.shape == (9, 128, 128, 3) and fps == 8
            clips.append(frames)
            assert r.hget(f"st:job:{video_id}", "attempts") == "1"
        assert all(not np.array_equal(clips[0], other) for other in clips[1:])  # each its own seed


def test_the_next_job_denoises_while_the_previous_one_encodes(stack: Stack, gated: Gated, tmp_path: Path) -> None:
    with stack.client() as c:
        first = c.post("/v1/videos", json={**GATED, "seed": 1}).json()["id"]
        gated.entered(first)  # its task returned; its encode waits at the gate
        second = c.post("/v1/videos", json={**GATED, "seed": 2}).json()["id"]
        # The second job denoises to the end (95 %) while the first one is still encoding.
        wait_status(c, second, ("in_progress",), min_progress=95, timeout_s=120)
        held = c.get(f"/v1/videos/{first}").json()
        assert held["status"] == "in_progress" and held["progress"] == 96
        assert not (stack.data_dir / first).exists()  # not stored, so not completed
        gated.open(first)
        assert wait_status(c, first, ("completed",))["progress"] == 100
        gated.entered(second)
        gated.open(second)
        wait_status(c, second, ("completed",))
        for video_id in (first, second):
            (tmp_path / "v.mp4").write_bytes(c.get(f"/v1/videos/{video_id}/content").content)
            assert decode_mp4(tmp_path / "v.mp4")[0].shape == (9, 128, 128, 3)


def test_a_cancel_during_the_background_encode_leaves_no_files(stack: Stack, gated: Gated) -> None:
    with stack.client() as c:
        video = c.post("/v1/videos", json=GATED).json()["id"]
        gated.entered(video)
        assert c.post(f"/v1/videos/{video}/cancel").status_code == 200
        gated.open(video)  # the files are written, then the completion finds the cancel
        failed = wait_status(c, video, ("failed",), timeout_s=60)
        assert failed["error"]["code"] == "cancelled"
        deadline = time.monotonic() + 10
        while (stack.data_dir / video).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (stack.data_dir / video).exists()
        assert c.get(f"/v1/videos/{video}/content").status_code == 409


def test_a_process_killed_during_the_background_encode_has_its_job_rerun_once(stack: Stack, gated: Gated,
                                                                                tmp_path: Path) -> None:
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stack.client() as c:
        video = c.post("/v1/videos", json={**GATED, "seed": 5}).json()["id"]
        pid = gated.entered(video)
        dead = r.hget(f"st:job:{video}", "worker")
        assert dead.endswith(f":{pid}") and r.hget(f"st:job:{video}", "status") == "in_progress"
        os.kill(pid, signal.SIGKILL)  # mid-encode: the task returned and its message was acked
        gated.open(video)  # the re-run passes the gate
        done = wait_status(c, video, ("completed",), timeout_s=180)
        assert gated.entered(video, times=2) != pid  # run again, by the pool process Celery started anew
        record = r.hgetall(f"st:job:{video}")
        assert record["attempts"] == "2" and record["worker"] != dead and done["progress"] == 100
        logs = [x for p in [*stack.procs, gated.proc] for x in log_records(p)]  # any live worker's reaper requeues
        assert any(x.get("msg") == "requeued a job whose worker died" and x.get("job_id") == video for x in logs)
        assert [x.get("msg") for x in logs if x.get("job_id") == video].count("generation completed") == 1
        assert [p for p in stack.data_dir.rglob("*.mp4") if video in str(p)] == [stack.data_dir / video / "video.mp4"]
        (tmp_path / "v.mp4").write_bytes(c.get(f"/v1/videos/{video}/content").content)
        assert decode_mp4(tmp_path / "v.mp4")[0].shape == (9, 128, 128, 3)


def test_an_encode_hung_past_the_hard_limit_fails_as_timeout_and_is_not_rerun(stack: Stack, gated: Gated) -> None:
    # spacetime-tiny-gated-capped: a 3 s limit (13 s hard) on the gated worker's queue. The gate
    # stays shut: the stage hangs, as an encode or upload that never returns. The heartbeat thread
    # fails the job as `timeout` at the hard limit and ends the process, as the hard limit ended a
    # task before the overlap; without that the job would stay in_progress under a live heartbeat.
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stack.client() as c:
        video = c.post("/v1/videos", json={**GATED, "model": "spacetime-tiny-gated-capped",
                                           "num_inference_steps": 1}).json()["id"]
        pid = gated.entered(video)
        failed = wait_status(c, video, ("failed",), timeout_s=60)
        assert failed["error"]["code"] == "timeout" and "hard time limit" in failed["error"]["message"]
        nxt = c.post("/v1/videos", json=GATED).json()["id"]  # a new pool process takes the next job
        gated.open(nxt)
        assert wait_status(c, nxt, ("completed",), timeout_s=120)["progress"] == 100
        assert gated.entered(nxt) != pid
        time.sleep(4.0)  # past the dead process's heartbeat TTL: the reaper must not re-run the failed job
        record = r.hgetall(f"st:job:{video}")
        assert record["status"] == "failed" and record["attempts"] == "1"
        assert not r.hexists("st:running", video) and not (stack.data_dir / video).exists()
        assert [line for line in (gated.gate / "entered").read_text().splitlines() if line.startswith(video)] \
            == [f"{video} {pid}"]  # never run again


def test_a_clean_stop_finishes_the_background_encode_first(stack: Stack, gated: Gated) -> None:
    # Last in this module: it stops the gated worker. SIGTERM to the main process alone, as
    # `docker stop` sends it: Celery's warm shutdown, then each pool process drains its stage.
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    with stack.client() as c:
        video = c.post("/v1/videos", json=GATED).json()["id"]
        gated.entered(video)
        gated.proc.proc.send_signal(signal.SIGTERM)
        time.sleep(2.0)
        assert gated.proc.proc.poll() is None  # waiting for the encode
        assert r.hget(f"st:job:{video}", "status") == "in_progress"
        gated.open(video)
        assert wait_status(c, video, ("completed",), timeout_s=60)["progress"] == 100
        assert gated.proc.proc.wait(timeout=30) == 0
        assert r.hget(f"st:job:{video}", "attempts") == "1" and (stack.data_dir / video / "video.mp4").exists()
