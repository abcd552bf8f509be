"""`spacetime worker --gpus 2` end to end on the CPU: a real gateway, a real Celery worker whose
pool process coordinates 2 rank processes (gloo), a video posted over HTTP comes back completed
with an MP4, and a cancel during denoising stops it. Uses a model only this test serves."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import Stack, free_port, spawn, stop, wait_for_worker, wait_status

MODEL = {"name": "spacetime-tiny-2gpu", "source": "spacetime-tiny", "sizes": ["128x128"], "seconds": ["1", "4"],
         "fps": 8, "default_steps": 4, "default_guidance": 5.0}


def test_two_rank_worker_completes_and_cancels_a_video(stack_env: dict[str, str], tmp_root: Path, redis_url: str) -> None:
    models_file = tmp_root / "models-2gpu.json"
    models_file.write_text(json.dumps([MODEL]))
    env = {**stack_env, "SPACETIME_MODELS_FILE": str(models_file), "SPACETIME_DATA_DIR": str(tmp_root / "videos-2gpu")}
    port = free_port()
    gateway = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_root / "gateway-2gpu.log", "gateway-2gpu")
    worker = spawn(["worker", "--models", MODEL["name"], "--gpus", "2", "--device", "cpu", "--name", "w2gpu@test"],
                   env, tmp_root / "worker-2gpu.log", "worker-2gpu")
    try:
        wait_for_worker(redis_url, MODEL["name"], procs=[worker, gateway], timeout_s=150)
        stack = Stack(f"http://127.0.0.1:{port}", redis_url, tmp_root / "videos-2gpu", env, [gateway, worker])
        with stack.client() as c:
            video = c.post("/v1/videos", json={"model": MODEL["name"], "prompt": "a red circle moving left",
                                               "seconds": "1", "size": "128x128"}).json()
            done = wait_status(c, video["id"], ("completed",), timeout_s=180)
            assert done["progress"] == 100
            content = c.get(f"/v1/videos/{video['id']}/content")
            assert content.status_code == 200 and content.content[4:8] == b"ftyp"  # an MP4

            slow = c.post("/v1/videos", json={"model": MODEL["name"], "prompt": "a blue square", "seconds": "4",
                                              "size": "128x128", "num_inference_steps": 60}).json()
            wait_status(c, slow["id"], ("in_progress",), min_progress=2, timeout_s=120)
            assert c.post(f"/v1/videos/{slow['id']}/cancel").status_code == 200
            after = wait_status(c, slow["id"], ("failed",), timeout_s=60)
            assert after["error"]["code"] == "cancelled" and after["progress"] < 95
            # The ranks stopped at the cancelled step and serve the next job.
            again = c.post("/v1/videos", json={"model": MODEL["name"], "prompt": "a green ball", "seconds": "1",
                                               "size": "128x128"}).json()
            wait_status(c, again["id"], ("completed",), timeout_s=180)
        log = worker.text()
        assert '"msg": "ranks ready"' in log or "ranks ready" in log
    except httpx.HTTPError:
        raise AssertionError(f"gateway/worker failed:\n{gateway.text()[-2000:]}\n{worker.text()[-4000:]}")
    finally:
        stop(worker.proc, "worker-2gpu", grace_s=10)
        stop(gateway.proc, "gateway-2gpu", grace_s=5)
