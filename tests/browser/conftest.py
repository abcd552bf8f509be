"""Browser fixtures: Debian's chromium driven by Playwright, and the running embedded stack.

- `embedded`: `spacetime up` on a free port with its own var/ folder: a real Redis, one real
  worker with the tiny pipeline, the gateway in open mode: exactly what `make run` starts.
- `browser` / `page`: headless chromium at /usr/bin/chromium (never Playwright's own download).
  Each test gets a fresh context; a failing test leaves a screenshot in var/test-artifacts/browser/.

The page's Content-Security-Policy stays on (no `bypass_csp`), so a script or style the CSP would
block in a real browser fails here too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.pages import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT

def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)")
    for item in items:
        if Path(item.path).is_relative_to(Path(__file__).parent) and "browser" in item.fixturenames:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)  # the page fixture reads it to screenshot failures
    return report


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# Module scope: Playwright's sync API keeps an event loop running in the main thread while it is
# open, which would break later tests (outside tests/browser/) that call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))  # uncaught exceptions in the page's JS
    yield pg
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        pg.screenshot(path=str(artifacts / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _free_port() -> int:
    from workers.embedded import free_port

    return free_port()


def _stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: gateway, worker, Redis stop in order
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`spacetime up --port P --var <tmp>`; yields the base URL once a worker serves spacetime-tiny."""
    var = tmp_path_factory.mktemp("embedded-var")
    port = _free_port()
    log = var / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACETIME_")}
    env["PYTHONPATH"] = str(ROOT)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--port", str(port), "--var", str(var)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"spacetime up exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["models"]["spacetime-tiny"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the embedded stack was not ready in 180 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield url
    finally:
        _stop_group(proc)


@pytest.fixture
def clean_gallery(embedded: str) -> Callable[[], None]:
    """Deletes every job of the embedded stack, so a test sees only its own."""

    def clean() -> None:
        with httpx.Client(base_url=embedded, timeout=10) as client:
            while True:
                page = client.get("/v1/videos", params={"limit": 100}).json()
                for video in page["data"]:
                    client.delete(f"/v1/videos/{video['id']}")
                if not page["has_more"]:
                    return

    clean()
    return clean
