"""The page against a gateway that requires API keys (the shared `stack` / `gateway` fixtures of
tests/conftest.py: real Redis, real worker, `spacetime serve` in key mode).

With a key, <video>, <img> and EventSource cannot send the Authorization header, so the page
fetches media itself (blob: URLs) and reads the event stream with fetch: this file covers that
path, the key box, and the errors a keyed user meets (no key, too many jobs, no worker).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import fill_tiny, open_page, submit, wait_js
from tests.conftest import Stack

pytestmark = pytest.mark.slow

DONE = "Done. The video is ready."
PAGE_SIZE = 8  # service/static/gallery.js


def save_key(page: Page, key: str) -> None:
    page.locator("#key-box summary").click()
    page.get_by_label("API key (kept in this browser only)").fill(key)
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#gallery-status")).not_to_contain_text("Loading")


def test_key_box_and_media_with_a_key(page: Page, stack: Stack, artifacts: Path) -> None:
    # 1. without a key the page says what is missing and where to put it
    open_page(page, stack.url)
    expect(page.locator("#error strong")).to_have_text("API key needed")
    expect(page.locator("#gallery-status")).to_contain_text("API key needed")

    # 2. with a key: the catalogue loads and a job runs, streamed through fetch, played from a blob:
    save_key(page, stack.key("browser"))
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#model option")).not_to_have_count(0)
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Model").select_option("spacetime-tiny-b")  # a model that lists only "exact"
    expect(page.get_by_label("Quality")).to_be_disabled()
    expect(page.get_by_label("Quality")).to_have_value("exact")
    page.get_by_label("Model").select_option("spacetime-tiny")
    expect(page.get_by_label("Quality")).to_be_enabled()
    fill_tiny(page, "a white dot bouncing", steps=2)
    submit(page)
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)
    expect(page.locator("#job")).to_have_attribute("data-feed", "events")  # the fetch-read stream, not polling
    wait_js(page, "() => document.getElementById('player').readyState >= 2", timeout_s=20)
    assert page.evaluate("() => document.getElementById('player').src").startswith("blob:")
    assert 0.9 <= page.evaluate("() => document.getElementById('player').duration") <= 1.3
    assert page.get_attribute("#download", "href").startswith("blob:")
    wait_js(page, "() => { const i = document.querySelector('#gallery img'); return i && i.naturalWidth > 0; }")

    # 3. the key survives a reload (localStorage), and another key sees none of these videos
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    expect(page.locator("#gallery li")).to_have_count(1)
    save_key(page, stack.key("browser-other"))
    expect(page.locator("#gallery-status")).to_have_text("No videos yet.")


def test_too_many_jobs_then_no_worker(page: Page, gateway: Stack, artifacts: Path) -> None:
    key = gateway.key("browser-limits")
    client = gateway.client(key)
    max_active = int(gateway.env["SPACETIME_MAX_ACTIVE_JOBS"])
    assert max_active + 1 > PAGE_SIZE, "the paging check below needs more jobs than one gallery page"
    # fill this key's quota of active jobs with jobs for a model no worker serves
    parked = [client.post("/v1/videos", json={"model": "spacetime-parked", "prompt": f"parked {i}",
                                              "seconds": "1", "size": "128x128"}) for i in range(max_active)]
    ids = [r.json()["id"] for r in parked]
    assert all(r.status_code == 200 for r in parked)
    try:
        open_page(page, gateway.url)
        save_key(page, key)

        # 1. the 429 is explained, and Generate counts down the Retry-After seconds
        fill_tiny(page, "one too many", steps=2, model="spacetime-parked")
        submit(page)
        error = page.locator("#error")
        expect(error.locator("strong")).to_have_text("Too many videos at once")
        expect(error).to_contain_text("Try again in 5 s")
        button = page.locator("#submit")
        expect(button).to_be_disabled()
        expect(button).to_have_text(re.compile(r"Wait \d s"))

        # 2. once a slot frees and the wait is over, the job is accepted, and the page says why it
        #    does not move: no worker serves that model
        client.post(f"/v1/videos/{ids.pop(0)}/cancel")
        expect(button).to_be_enabled(timeout=10_000)
        submit(page)
        status = page.locator("#job-status")
        expect(status).to_contain_text("No worker is serving spacetime-parked", timeout=15_000)
        page.screenshot(path=str(artifacts / "no-worker.png"), full_page=True)

        # 3. the gallery pages with the list's cursor: a page of 8, then "Load more" for the rest
        total = max_active + 1
        tiles = page.locator("#gallery li")
        more = page.get_by_role("button", name="Load more")
        shown = PAGE_SIZE
        expect(tiles).to_have_count(shown)
        while more.is_visible():
            more.click()
            shown = min(total, shown + PAGE_SIZE)
            expect(tiles).to_have_count(shown)  # the next page landed (and set "Load more" anew)
        assert shown == total
        ids_shown = [tiles.nth(i).get_attribute("data-id") for i in range(total)]
        assert len(set(ids_shown)) == total and ids_shown[0] == page.get_attribute("#job", "data-job-id")

        # 4. the page's own Cancel ends it
        page.get_by_role("button", name="Cancel").click()
        expect(status).to_have_text("Cancelled.")
    finally:
        for video_id in ids:
            client.post(f"/v1/videos/{video_id}/cancel")
        client.close()
