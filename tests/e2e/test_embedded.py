"""`spacetime up` (what `make run` starts): Redis + worker + gateway from one command, open on
loopback, persistent across restarts, and stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from tests.conftest import ROOT, wait_status
from workers.embedded import free_port


def start_up(var: Path, port: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACETIME_")}
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--port", str(port), "--var", str(var)],
                            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while "Ctrl-C stops everything" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    redis_url = re.search(r"Redis: (redis://\S+)", log.read_text()).group(1)
    return proc, redis_url


def ctrl_c(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=40)


def test_up_serves_open_on_loopback_persists_and_stops_cleanly(tmp_path: Path) -> None:
    var, port, log = tmp_path / "var", free_port(), tmp_path / "up.log"
    proc, redis_url = start_up(var, port, log)
    try:
        text = log.read_text()
        assert "OPEN MODE" in text and f"http://127.0.0.1:{port}" in text and "OpenAI(base_url=" in text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:  # no key: open mode
            video = c.post("/v1/videos", data={"prompt": "a red circle", "seconds": "1", "num_inference_steps": "2"}).json()
            wait_status(c, video["id"], ("completed",), timeout_s=120)
            assert c.get(f"/v1/videos/{video['id']}/content").status_code == 200
    finally:
        code = ctrl_c(proc)
    assert code == 0, log.read_text()[-3000:]
    assert "stopped." in log.read_text()
    for url in (f"http://127.0.0.1:{port}/healthz",):
        try:
            httpx.get(url, timeout=1)
            raise AssertionError("the gateway still answers after Ctrl-C")
        except httpx.ConnectError:
            pass
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
        raise AssertionError("redis still answers after Ctrl-C")
    except redis.ConnectionError:
        pass
    assert (var / "redis").is_dir() and (var / "videos" / video["id"] / "video.mp4").exists()

    # Restarted on the same folder, the job is still there (Redis append-only file).
    proc, _ = start_up(var, port, tmp_path / "up2.log")
    try:
        again = httpx.get(f"http://127.0.0.1:{port}/v1/videos/{video['id']}", timeout=10).json()
        assert again["status"] == "completed" and again["id"] == video["id"]
    finally:
        assert ctrl_c(proc) == 0
