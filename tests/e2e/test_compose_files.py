"""The deployment files, checked without a Docker engine: docker-compose.yml against the compose
specification's JSON schema (tests/fixtures/compose/compose_spec.json, see ORIGIN.md there), the
promises the compose file and the Dockerfile make to operators, and deploy/.env.example against
the settings the code reads. tests/e2e/test_compose_stack.py then runs the file's services."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench.faults.stack import ComposeError, load_compose, read_env_file  # noqa: E402

SCHEMA = json.loads((ROOT / "tests/fixtures/compose/compose_spec.json").read_text())
ENV_EXAMPLE = read_env_file(ROOT / "deploy/.env.example")
SECRETS = {"SPACETIME_KEY_PEPPER": "p" * 32, "SPACETIME_WEBHOOK_SECRET": "whsec_c2VjcmV0"}


def compose() -> dict:
    return load_compose({**ENV_EXAMPLE, **SECRETS})


def schema_errors(document: dict) -> list[str]:
    validator = jsonschema.Draft201909Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


# ----------------------------------------------------------------------------- docker-compose.yml

def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    assert schema_errors(compose()) == []


def test_schema_check_rejects_a_misspelt_key() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["worker"]["healtcheck"] = broken["services"]["worker"].pop("healthcheck")
    assert any("healtcheck" in e for e in schema_errors(broken))


def test_compose_refuses_to_start_without_the_secrets() -> None:
    with pytest.raises(ComposeError, match="SPACETIME_KEY_PEPPER"):
        load_compose(ENV_EXAMPLE)  # the example ships them empty


def test_gpu_workers_reserve_one_gpu_each_and_cpu_worker_is_a_profile() -> None:
    services = compose()["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "replicas" not in services["worker"].get("deploy", {})  # `--scale worker=N` decides
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert "deploy" not in services["worker-cpu"]  # no GPU reservation
    gpu, cpu = services["worker"]["command"], services["worker-cpu"]["command"]
    assert gpu[gpu.index("--device") + 1] == "cuda" and cpu[cpu.index("--device") + 1] == "cpu"
    assert [a for a in gpu if a not in ("cuda", "cpu")] == [a for a in cpu if a not in ("cuda", "cpu")]
    assert services["flower"]["profiles"] == ["monitoring"]


def test_redis_persists_with_append_only_file_on_a_volume() -> None:
    spec = compose()["services"]["redis"]
    cmd = spec["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"  # broker messages must never be evicted
    assert cmd[cmd.index("--dir") + 1] == "/data" and "redis-data:/data" in spec["volumes"]


def test_videos_are_shared_and_models_mounted_read_only() -> None:
    services = compose()["services"]
    for name in ("gateway", "worker", "worker-cpu"):
        assert "videos:/videos" in services[name]["volumes"], name
        assert services[name]["environment"]["SPACETIME_DATA_DIR"] == "/videos"
        assert services[name]["environment"]["SPACETIME_REDIS_URL"] == "redis://redis:6379/0"
    for name in ("worker", "worker-cpu"):
        models = [v for v in services[name]["volumes"] if ":/models" in v]
        assert models and all(v.endswith(":ro") for v in models), name


def test_env_example_names_only_settings_the_code_reads() -> None:
    """A misspelt SPACETIME_ line would be silently ignored (extra="ignore"): catch it here."""
    from service.config import Settings

    used_by_compose = set(re.findall(r"\$\{([A-Z_0-9]+)", (ROOT / "docker-compose.yml").read_text()))
    provenance = (ROOT / "workers/provenance.py").read_text()
    known = {f"SPACETIME_{name.upper()}" for name in Settings.model_fields} | used_by_compose | {"SPACETIME_WORKER_MODELS"}
    text = (ROOT / "deploy/.env.example").read_text()
    names = set(re.findall(r"^#?\s*(SPACETIME_[A-Z_0-9]+)=", text, flags=re.M))
    unknown = {n for n in names - known if n.removeprefix("SPACETIME_").lower() not in provenance}
    assert names and unknown == set()


# ----------------------------------------------------------------------------- Dockerfile

def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], line continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        if op.upper() == "FROM":
            current = stages.setdefault(args.split(" AS ")[-1].strip(), [])
        if current is not None:
            current.append((op.upper(), args.strip()))
    return stages


def test_dockerfile_has_the_three_targets_non_root_with_healthchecks() -> None:
    stages = dockerfile_stages()
    assert {"gateway", "worker", "worker-cpu"} <= set(stages)
    for name in ("gateway", "worker", "worker-cpu"):
        ops = [op for op, _ in stages[name]]
        users = [args for op, args in stages[name] if op == "USER"]
        assert users and users[-1] not in ("root", "0"), name
        assert ops.index("USER") < ops.index("CMD"), name  # the process runs unprivileged
        assert "HEALTHCHECK" in ops, name


def test_gateway_target_installs_no_worker_extra_and_no_torch() -> None:
    gateway = " ".join(args for op, args in dockerfile_stages()["gateway"] if op == "RUN")
    assert "pip install /src" in gateway
    assert "[worker]" not in gateway and "torch" not in gateway
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in base if re.match(r"(torch|diffusers|transformers|accelerate)\b", d)]


def test_worker_targets_pin_torch_before_the_worker_extra() -> None:
    stages = dockerfile_stages()
    assert stages["worker"][0][1].startswith("${CUDA_IMAGE}")
    assert "ARG CUDA_IMAGE=nvidia/cuda:" in (ROOT / "Dockerfile").read_text()
    for name in ("worker", "worker-cpu"):
        runs = [args for op, args in stages[name] if op == "RUN"]
        torch = next(i for i, r in enumerate(runs) if 'torch==${TORCH_VERSION}' in r)
        extra = next(i for i, r in enumerate(runs) if '/src[worker]' in r)
        assert torch < extra, name
    assert "download.pytorch.org/whl/cpu" in " ".join(a for op, a in stages["worker-cpu"] if op == "RUN")


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    copied = [args.split()[0] for stage in dockerfile_stages().values() for op, args in stage
              if op == "COPY" and not args.startswith("--from")]
    assert "model" in copied  # the package, with the tiny weights folder when it lands
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not dockerignored(src), src
    tracked = subprocess.run(["git", "ls-files", "model/weights"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not [f for f in tracked.split() if dockerignored(f)]


def test_compose_healthchecks_call_what_the_image_installs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "/src/deploy/healthcheck.py /usr/local/bin/spacetime-healthcheck" in text
    for name, spec in compose()["services"].items():
        test = spec.get("healthcheck", {}).get("test", [])
        if "python" in test:
            assert "/usr/local/bin/spacetime-healthcheck" in test, name


def test_gateway_healthcheck_fails_when_nothing_listens() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "deploy/healthcheck.py"), "--timeout", "1", "gateway",
                           "--url", "http://127.0.0.1:9/healthz"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 1 and done.stdout.startswith("unhealthy:")


# ----------------------------------------------------------------------------- the gateway image's contents

def base_dependency_closure() -> set[str]:
    """Distributions `pip install .` (no extras) brings in: pyproject's dependencies and theirs, with
    the extras they ask for, from the installed metadata."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo, seen, names = [Requirement(r) for r in base], set(), set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # not installed here (a platform-specific dependency)
        names.add(name)
        for text in dist.requires or []:
            sub = Requirement(text)
            envs = [{"extra": e} for e in (req.extras or {""})]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append(sub)
    return names


def test_gateway_runs_with_only_what_its_image_installs() -> None:
    """The gateway image has the base dependencies only. Block every module of every other installed
    distribution (numpy, torch, PIL, av, ...: importing one raises ImportError, as in the image) and
    build the app and import the CLI commands the image runs (serve, keys): optional imports may
    fail quietly, required ones fail this test."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    allowed = base_dependency_closure() | {"spacetime", "pip", "setuptools"}
    blocked = sorted(m for m, dists in packages_distributions().items()
                     if not {canonicalize_name(d) for d in dists} & allowed and m.isidentifier())
    assert {"numpy", "torch", "PIL", "av", "diffusers"} <= set(blocked)
    code = ("import sys, json; blocked = json.loads(sys.argv[1])\n"
            "for name in blocked: sys.modules[name] = None\n"
            "from service.main import create_app; import service.serve, service.keys, workers.cli\n"
            "app = create_app(); print(len(app.openapi()['paths']))")
    env = {"SPACETIME_EMBEDDED": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    paths = []
    for block in (blocked, []):
        done = subprocess.run([sys.executable, "-c", code, json.dumps(block)], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        paths.append(int(done.stdout.split()[-1]))
    assert paths[0] == paths[1] >= 11  # every route registered, as with everything installed


def test_package_built_as_the_image_builds_it_carries_weights_and_data(tmp_path: Path) -> None:
    """`pip install /src` in the Dockerfile installs a wheel built from what its COPY lines bring in;
    that wheel must carry the tiny model's weights, the prompt policy and the web page's files."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for folder in ("service", "workers", "model"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("spacetime-*.whl"))
    packaged = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "model/weights", "service/static", "service/policy"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert "service/policy/default.json" in tracked and any(f.endswith(".safetensors") for f in tracked)
    assert [f for f in tracked if f not in packaged] == []
