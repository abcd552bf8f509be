"""Safety end to end, in real processes: the worker's prompt-policy re-check and the output
check blocking (and letting through) a video made by the real tiny pipeline.

This module runs its own gateway and workers on database 1 of the session's Redis, so its
queues, job records and storage are its own: the session `stack` worker (database 0) never
picks up these jobs, and the policy file can be edited without touching other tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.safety import DEFAULT_POLICY_PATH, prompt_hash
from tests.conftest import Proc, Stack, spawn, wait_for_worker, wait_healthy, wait_status
from tests.workers.test_output_check import make_classifier
from workers.embedded import free_port, stop

SHORT = {"seconds": "1", "size": "128x128", "num_inference_steps": 2}


@dataclass
class SafetyStack(Stack):
    policy_file: Path = Path()
    blocker: Proc | None = None  # the worker whose output check blocks everything


@pytest.fixture(scope="module")
def safety(stack_env: dict[str, str], redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SafetyStack]:
    """Gateway + a worker whose output check always blocks (spacetime-tiny) + one whose check
    always allows (spacetime-tiny-b), all reading one policy file, a copy of the default."""
    root = tmp_path_factory.mktemp("safety")
    policy_file = root / "policy.json"
    shutil.copy(DEFAULT_POLICY_PATH, policy_file)
    db1 = redis_url.rsplit("/", 1)[0] + "/1"
    env = {**stack_env, "SPACETIME_REDIS_URL": db1, "SPACETIME_DATA_DIR": str(root / "videos"),
           "SPACETIME_POLICY_FILE": str(policy_file)}

    def start_worker(name: str, models: str, classifier: Path) -> Proc:
        return spawn(["worker", "--models", models, "--concurrency", "1", "--name", f"{name}@test"],
                     {**env, "SPACETIME_OUTPUT_CHECK_MODEL": str(classifier)}, root / f"{name}.log", name)

    port = free_port()
    gateway = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env, root / "gateway.log", "gateway")
    # nsfw ~ 0.9997 on every frame / ~ 0.0003 on every frame (tests/workers/test_output_check.py)
    blocker = start_worker("blocker", "spacetime-tiny", make_classifier(root / "block", bias=(-4.0, 4.0)))
    allower = start_worker("allower", "spacetime-tiny-b", make_classifier(root / "allow", bias=(4.0, -4.0)))
    procs = [gateway, blocker, allower]
    s = SafetyStack(f"http://127.0.0.1:{port}", db1, root / "videos", env, procs, policy_file, blocker)
    try:
        wait_for_worker(db1, "spacetime-tiny", procs=[blocker])
        wait_for_worker(db1, "spacetime-tiny-b", procs=[allower])
        wait_healthy(s.url, gateway)
        yield s
    finally:
        for p in procs:
            stop(p.proc, p.name, grace_s=5)


def assert_no_outputs(s: SafetyStack, c: httpx.Client, video_id: str) -> None:
    """Nothing stored for the job, and every download route says why."""
    assert not (s.data_dir / video_id).exists()
    scratch = s.data_dir / ".tmp"
    assert not scratch.exists() or not any(scratch.iterdir())  # no half-written workspace left
    for variant in ("video", "thumbnail", "spritesheet"):
        r = c.get(f"/v1/videos/{video_id}/content", params={"variant": variant})
        assert r.status_code == 409 and r.json()["error"]["code"] == "video_not_ready", r.text
        assert "failed" in r.json()["error"]["message"]
    r = c.get(f"/v1/videos/{video_id}/provenance")
    assert r.status_code == 409 and "failed" in r.json()["error"]["message"]


def test_output_check_blocks_the_video_and_stores_nothing(safety: SafetyStack) -> None:
    with safety.client() as c:
        video = c.post("/v1/videos", json={**SHORT, "model": "spacetime-tiny", "prompt": "a red circle moving left"})
        assert video.status_code == 200, video.text
        failed = wait_status(c, video.json()["id"], ("failed",))
        assert failed["error"]["code"] == "output_blocked"
        assert failed["error"]["message"].startswith("The generated video was blocked by the output check (nsfw: ")
        assert_no_outputs(safety, c, failed["id"])


def test_output_check_that_allows_lets_the_video_through(safety: SafetyStack) -> None:
    with safety.client() as c:
        video = c.post("/v1/videos", json={**SHORT, "model": "spacetime-tiny-b", "prompt": "a red circle moving left"})
        done = wait_status(c, video.json()["id"], ("completed",))
        mp4 = c.get(f"/v1/videos/{done['id']}/content")
        assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
        assert (safety.data_dir / done["id"] / "video.mp4").exists()


def test_worker_rechecks_the_prompt_under_the_policy_in_force_when_the_job_runs(safety: SafetyStack) -> None:
    """An operator tightens the policy file while a job waits in the queue: the gateway accepted
    the job under the old policy, the worker refuses it under the new one before sampling."""
    prompt = "a silver zeppelin drifting over the marshland at dawn"
    with safety.client() as c:
        # Keep the one blocking worker (concurrency 1) busy so the next job waits behind it.
        busy = c.post("/v1/videos", json={**SHORT, "model": "spacetime-tiny", "prompt": "a blue square"}).json()
        wait_status(c, busy["id"], ("in_progress",))
        queued = c.post("/v1/videos", json={**SHORT, "model": "spacetime-tiny", "prompt": prompt})
        assert queued.status_code == 200, queued.text

        policy = json.loads(safety.policy_file.read_text())
        policy["categories"].append({"name": "airships", "message": "airships are not allowed on this service",
                                     "terms": ["zeppelin"]})
        tmp = safety.policy_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(policy))
        os.replace(tmp, safety.policy_file)  # atomic, as an editor's save or a config push would be
        # Not yet claimed, so the worker's check necessarily runs after the edit.
        assert c.get(f"/v1/videos/{queued.json()['id']}").json()["status"] == "queued"
        # The gateway reloads the edited file: the same prompt is now refused at the door.
        refused = c.post("/v1/videos", json={**SHORT, "model": "spacetime-tiny", "prompt": prompt})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_policy_violation"

        assert wait_status(c, busy["id"], ("failed",))["error"]["code"] == "output_blocked"
        failed = wait_status(c, queued.json()["id"], ("failed",))
        assert failed["error"] == {
            "code": "content_policy_violation",
            "message": "The prompt was rejected by the content policy: airships are not allowed on this "
                       "service (category: airships).",
        }
        assert_no_outputs(safety, c, failed["id"])
    assert safety.blocker is not None
    log = safety.blocker.text()
    assert f'"prompt_sha256": "{prompt_hash(prompt)}", "category": "airships"' in log
    assert "zeppelin" not in log and "marshland" not in log  # the hash is logged, never the text


def test_worker_with_a_broken_policy_file_refuses_to_start(stack_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "policy.json"
    broken.write_text('{"version": 1, "categories": [')
    done = subprocess.run([sys.executable, "-m", "workers.cli", "worker", "--models", "spacetime-tiny"],
                          env={**stack_env, "SPACETIME_POLICY_FILE": str(broken)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and f"error: policy file {broken} is not valid JSON" in done.stderr, done.stderr
