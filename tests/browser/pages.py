"""Helpers the browser tests share: where chromium and the artefacts live, and page actions.

Waits poll `page.evaluate` rather than using `page.wait_for_function`: the page's
Content-Security-Policy (kept on in the tests) forbids the eval that string predicates need.
"""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Page, expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"

# Records every value the progress bar takes and every status line, so "progress advances" is
# checked on what the page showed rather than on samples that could miss the steps.
RECORD_JS = """
() => {
  window.__progress = [];
  window.__status = [];
  const bar = document.getElementById('job-progress');
  const status = document.getElementById('job-status');
  new MutationObserver(() => window.__progress.push(Number(bar.value)))
    .observe(bar, {attributes: true, attributeFilter: ['value']});
  new MutationObserver(() => window.__status.push(status.textContent))
    .observe(status, {childList: true, characterData: true, subtree: true});
}
"""


def wait_js(page: Page, expression: str, arg: object = None, timeout_s: float = 15.0) -> object:
    """Poll a JS function source (taking `arg`) until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still falsy after {timeout_s} s: {expression}")
        time.sleep(0.1)


def open_page(page: Page, base_url: str) -> None:
    """Load `/` and wait until the catalogue and the gallery have loaded."""
    page.goto(base_url + "/")
    expect(page.locator("html")).to_have_attribute("data-ready", "true")


def fill_tiny(page: Page, prompt: str, steps: int = 4, model: str | None = None) -> None:
    """Fill the form for the cheapest clip: 1 s at 128x128 with few denoising steps."""
    advanced = page.locator("#advanced")
    if advanced.get_attribute("open") is None:
        page.get_by_text("Advanced settings").click()
    if model is not None:
        page.get_by_label("Model").select_option(model)
    page.get_by_label("Size (width × height)").select_option("128x128")
    page.get_by_label("Duration (seconds)").select_option("1")
    page.get_by_label("Denoising steps").fill(str(steps))
    page.get_by_label("Prompt", exact=True).fill(prompt)


def submit(page: Page) -> None:
    page.get_by_role("button", name="Generate", exact=True).click()
