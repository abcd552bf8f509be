"""The web page in Debian's chromium against the running embedded stack (`spacetime up`: a real
Redis, a real worker with the tiny pipeline, the gateway in open mode).

Clips are the cheapest the catalogue allows (1 s, 128x128, few steps) so each job takes seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import RECORD_JS, fill_tiny, open_page, submit, wait_js

pytestmark = pytest.mark.slow

PROMPT = "a red circle moving left"  # the shapes world's canonical caption form
DONE = "Done. The video is ready."


def job_id_of(page: Page) -> str:
    return page.get_attribute("#job", "data-job-id")


def test_submit_watch_play_regenerate_list_delete(
    page: Page, embedded: str, clean_gallery: Callable[[], None], artifacts: Path,
) -> None:
    open_page(page, embedded)
    page.evaluate(RECORD_JS)
    fill_tiny(page, PROMPT, steps=20)  # the default: this clip is the README picture
    submit(page)

    # 1. the job panel follows the event stream to the end; progress only ever goes up
    expect(page.locator("#job")).to_be_visible()
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)
    expect(page.locator("#result")).to_be_visible()
    job_id = job_id_of(page)
    expect(page.locator("#job")).to_have_attribute("data-feed", "events")  # EventSource, not the polling fallback
    progress, statuses = page.evaluate("[window.__progress, window.__status]")
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert any(0 < p < 100 for p in progress), f"no intermediate progress was shown: {progress}"
    assert progress[-1] == 100
    assert any(s.startswith("Generating") for s in statuses), statuses

    # 2. the <video> loads and plays the 1 s clip: 9 frames at 8 fps, 128x128
    wait_js(page, "() => document.getElementById('player').readyState >= 2", timeout_s=20)
    duration, width, height = page.evaluate(
        "() => { const v = document.getElementById('player'); return [v.duration, v.videoWidth, v.videoHeight]; }")
    assert 0.9 <= duration <= 1.3, duration
    assert (width, height) == (128, 128)
    page.evaluate("() => { const v = document.getElementById('player'); v.muted = true; return v.play(); }")
    wait_js(page, "() => document.getElementById('player').currentTime > 0", timeout_s=10)
    page.screenshot(path=str(artifacts / "result.png"), full_page=True)

    # the provenance badge shows what the provenance route says, and nothing where it has no record
    provenance = httpx.get(f"{embedded}/v1/videos/{job_id}/provenance")
    badge = page.locator("#provenance")
    if provenance.status_code == 200:
        record = provenance.json()
        if record["state"] == "invalid":
            expect(badge).to_have_text("C2PA manifest invalid")
        else:
            signer = record["manifest"]["signature"]["common_name"]
            expect(badge).to_contain_text("C2PA valid")
            expect(badge).to_contain_text(f"signed by {signer}")
    else:
        assert provenance.status_code == 404
        expect(badge).to_be_hidden()

    # 3. the download link is the MP4, served with Range support
    resp = httpx.get(embedded + page.get_attribute("#download", "href"), headers={"Range": "bytes=0-99"})
    assert resp.status_code == 206 and len(resp.content) == 100
    assert resp.headers["content-type"] == "video/mp4"

    # 4. "edit prompt and regenerate" refills the form with the job's settings and focuses the prompt
    seed = httpx.get(f"{embedded}/v1/videos/{job_id}").json()["seed"]
    page.get_by_label("Prompt", exact=True).fill("")
    page.get_by_role("button", name="Edit prompt and regenerate").click()
    expect(page.get_by_label("Prompt", exact=True)).to_be_focused()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(PROMPT)
    expect(page.get_by_label("Seed")).to_have_value(str(seed))
    expect(page.get_by_label("Denoising steps")).to_have_value("20")

    # 5. "again with this seed" submits the same settings at once: a new job with the same seed
    page.get_by_role("button", name="Again with this seed").click()
    expect(page.locator("#job")).not_to_have_attribute("data-job-id", job_id)
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)
    again = job_id_of(page)
    assert httpx.get(f"{embedded}/v1/videos/{again}").json()["seed"] == seed
    expect(page.locator("#job-meta")).to_contain_text(f"seed {seed}")

    # 6. the gallery lists both jobs, newest first, with loaded thumbnails
    tiles = page.locator("#gallery li")
    expect(tiles).to_have_count(2)
    assert [tiles.nth(i).get_attribute("data-id") for i in range(2)] == [again, job_id]
    wait_js(page, "() => [...document.querySelectorAll('#gallery img')].filter(i => i.naturalWidth > 0).length == 2")
    page.screenshot(path=str(artifacts / "gallery.png"), full_page=True)
    # a tile opens its job in the panel, ready to play
    page.locator(f'#gallery li[data-id="{job_id}"]').get_by_role("button", name=f"Open video: {PROMPT}").click()
    expect(page.locator("#job")).to_have_attribute("data-job-id", job_id)
    expect(page.locator("#job-status")).to_have_text(DONE)
    wait_js(page, "() => document.getElementById('player').readyState >= 2", timeout_s=20)
    # the README's picture (docs/screenshots/web.png is a copy): a desktop window, a fresh load
    page.set_viewport_size({"width": 1280, "height": 940})
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    page.locator(f'#gallery li[data-id="{again}"]').get_by_role("button", name=f"Open video: {PROMPT}").click()
    wait_js(page, "() => document.getElementById('player').readyState >= 4", timeout_s=20)
    expect(page.locator("#provenance")).to_be_visible()
    wait_js(page, "() => [...document.querySelectorAll('#gallery img')].every(i => i.naturalWidth > 0)")
    page.wait_for_timeout(1500)  # the media controls fade their loading spinner out
    page.screenshot(path=str(artifacts / "web.png"))

    # the address names the job on show, Copy link copies it, and the link reopens the job
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    assert page.url == f"{embedded}/#{again}"
    page.get_by_role("button", name="Copy link").click()
    expect(page.locator("#share-status")).to_have_text("Link copied.")
    assert page.evaluate("() => navigator.clipboard.readText()") == page.url
    other = page.context.new_page()
    other.goto(f"{embedded}/#{job_id}")
    expect(other.locator("#job")).to_have_attribute("data-job-id", job_id)
    expect(other.locator("#job-status")).to_have_text(DONE)
    wait_js(other, "() => document.getElementById('player').readyState >= 2", timeout_s=20)
    other.goto(f"{embedded}/#video_doesnotexist")
    expect(other.locator("#error strong")).to_have_text("Not found")
    other.close()

    # 7. delete takes two clicks and removes the tile and the job
    tile = page.locator(f'#gallery li[data-id="{job_id}"]')
    tile.get_by_role("button", name=f"Delete video: {PROMPT}").click()
    expect(tile).to_be_visible()
    tile.get_by_role("button", name=f"Confirm delete of video: {PROMPT}").click()
    expect(tile).to_have_count(0)
    expect(page.locator("#gallery-status")).to_have_text("Video deleted.")
    expect(tiles).to_have_count(1)
    assert httpx.get(f"{embedded}/v1/videos/{job_id}").status_code == 404
    # deleting the job on show also closes its panel
    tile = page.locator(f'#gallery li[data-id="{again}"]')
    tile.get_by_role("button", name=f"Delete video: {PROMPT}").click()
    tile.get_by_role("button", name=f"Confirm delete of video: {PROMPT}").click()
    expect(page.locator("#job")).to_be_hidden()
    expect(page.locator("#gallery-status")).to_have_text("No videos yet.")
    assert page.url == f"{embedded}/"


def test_policy_rejection_is_shown_and_the_keyboard_submits(page: Page, embedded: str, artifacts: Path) -> None:
    open_page(page, embedded)
    page.get_by_label("Prompt", exact=True).focus()
    page.keyboard.type("a deepfake video of a dancer")
    page.keyboard.press("Control+Enter")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error.locator("strong")).to_have_text("Prompt rejected by the content policy")
    expect(page.get_by_label("Prompt", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#job")).to_be_hidden()  # nothing was queued
    page.screenshot(path=str(artifacts / "policy-error.png"), full_page=True)

    # an accepted prompt clears the error
    fill_tiny(page, "a green square", steps=1)
    submit(page)
    expect(error).to_be_hidden()
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)


def test_an_unsupported_size_names_the_field(page: Page, embedded: str) -> None:
    open_page(page, embedded)
    # a catalogue that changed under an open page: the select offers a size the model refuses
    page.evaluate("() => document.getElementById('size').add(new Option('999 × 999', '999x999'))")
    fill_tiny(page, "a blue triangle")
    page.get_by_label("Size (width × height)").select_option("999x999")
    submit(page)
    error = page.locator("#error")
    expect(error.locator("strong")).to_have_text("Request not accepted")
    expect(error).to_contain_text("128x128")  # the gateway lists the allowed sizes
    expect(error).to_contain_text("field: size")
    expect(page.get_by_label("Size (width × height)")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#job")).to_be_hidden()


def test_cancel_stops_the_job_and_says_so(page: Page, embedded: str) -> None:
    open_page(page, embedded)
    fill_tiny(page, "a yellow star spinning", steps=100)
    submit(page)
    expect(page.locator("#job-status")).to_contain_text("Generating", timeout=60_000)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("Cancelled.", timeout=60_000)
    expect(page.locator("#job-error strong")).to_have_text("Cancelled")
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#job-progress-row")).to_be_hidden()
    tile = page.locator(f'#gallery li[data-id="{page.get_attribute("#job", "data-job-id")}"]')
    expect(tile.locator(".meta")).to_contain_text("cancelled")


def test_phone_width_labels_and_live_regions(page: Page, embedded: str, artifacts: Path) -> None:
    page.set_viewport_size({"width": 375, "height": 812})
    open_page(page, embedded)
    page.get_by_text("Advanced settings").click()
    overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    unlabeled = page.evaluate(
        "() => [...document.querySelectorAll('input, select, textarea')]"
        ".filter(el => !el.labels.length && !el.getAttribute('aria-label')).map(el => el.id)")
    assert unlabeled == []
    small = page.evaluate(
        "() => [...document.querySelectorAll('button:not([hidden])')].filter(b => b.offsetParent)"
        ".filter(b => b.getBoundingClientRect().height < 36).map(b => b.id || b.textContent)")
    assert small == [], f"touch targets under 36 px: {small}"
    # what a screen reader is given: named regions, labelled controls in reading order
    expect(page.locator("main")).to_match_aria_snapshot("""
      - region "Describe a video":
        - heading "Describe a video" [level=2]
        - textbox "Prompt"
        - group:
          - combobox "Model"
          - combobox "Size (width × height)"
          - combobox "Duration (seconds)"
          - spinbutton "Seed"
          - spinbutton "Denoising steps"
          - spinbutton "Guidance scale"
          - combobox "Quality"
          - textbox "Negative prompt"
        - button "Generate"
      - region "Past videos":
        - heading "Past videos" [level=2]
        - button "Refresh"
        - status
    """)
    for region in ("#job-status", "#gallery-status"):
        assert page.locator(region).get_attribute("role") == "status"
    assert page.locator("#job-status").get_attribute("aria-live") == "polite"
    page.screenshot(path=str(artifacts / "phone.png"), full_page=True)


def test_error_wording_for_paths_the_stack_cannot_be_made_to_take(page: Page, embedded: str) -> None:
    """503 (queue down) and job failures other than cancel cannot be provoked on demand in the
    real stack; their wording is checked on the page's own module, in the page's origin."""
    open_page(page, embedded)
    described = page.evaluate("""async () => {
      const m = await import('/static/api.js');
      const e = (o) => m.describeError(new m.ApiError(o));
      return {
        queue: e({status: 503, code: 'queue_unavailable', message: 'The job queue is unavailable.'}),
        limit: e({status: 429, code: 'rate_limit_exceeded', message: 'Create limit reached.', retryAfterS: 12}),
        expired: e({status: 410, code: 'video_expired', message: 'expired'}),
        timeout: m.describeJobError({code: 'timeout', message: 'Generation took longer than 1800 s.'}),
        blocked: m.describeJobError({code: 'output_blocked', message: 'withheld'}),
        lost: m.describeJobError({code: 'worker_lost', message: 'Gave up after 3 attempts.'}),
      };
    }""")
    assert described["queue"]["title"] == "Worker unavailable"
    assert described["limit"] == {"title": "Rate limit reached", "message": "Create limit reached. Try again in 12 s."}
    assert described["expired"]["title"] == "Video expired"
    assert described["timeout"] == {"title": "Generation failed (timeout)", "message": "Generation took longer than 1800 s."}
    assert described["blocked"]["title"] == "Video withheld by the content policy"
    assert described["lost"]["title"] == "Worker lost"


def test_an_unreachable_server_is_said_plainly(page: Page, embedded: str) -> None:
    open_page(page, embedded)
    page.route("**/v1/videos", lambda route: route.abort("connectionrefused"))  # the network, not the app
    fill_tiny(page, "a purple cube")
    submit(page)
    expect(page.locator("#error strong")).to_have_text("Server unreachable")
    expect(page.get_by_role("button", name="Generate", exact=True)).to_be_enabled()


def test_without_the_event_stream_the_page_polls(page: Page, embedded: str) -> None:
    # a proxy that refuses server-sent events: the page falls back to polling the job
    page.route("**/events", lambda route: route.fulfill(status=502, body="Bad Gateway"))
    open_page(page, embedded)
    fill_tiny(page, "an orange ring", steps=1)
    submit(page)
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)
    expect(page.locator("#job")).to_have_attribute("data-feed", "poll")
    wait_js(page, "() => document.getElementById('player').readyState >= 2", timeout_s=20)


def test_fast_quality_is_sent_shown_and_refilled(page: Page, embedded: str) -> None:
    open_page(page, embedded)
    fill_tiny(page, "a purple triangle moving down", steps=2)
    quality = page.get_by_label("Quality")
    expect(quality).to_have_value("exact")  # the default, as the API's
    expect(quality).to_be_enabled()  # the tiny model lists both qualities
    quality.select_option("fast")
    submit(page)
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)
    job = httpx.get(f"{embedded}/v1/videos/{job_id_of(page)}").json()
    assert job["quality"] == "fast"
    expect(page.locator("#job-meta")).to_contain_text("fast")
    quality.select_option("exact")
    page.get_by_role("button", name="Edit prompt and regenerate").click()
    expect(quality).to_have_value("fast")  # the job's settings come back, quality included



def test_remix_a_finished_video_from_its_panel(page: Page, embedded: str, artifacts: Path) -> None:
    open_page(page, embedded)
    fill_tiny(page, PROMPT, steps=8)
    submit(page)
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)
    source = job_id_of(page)
    strength = page.get_by_label("Change")
    default = httpx.get(f"{embedded}/v1/models/spacetime-tiny").json()["remix_strength"]
    expect(strength).to_have_value(str(default))  # the model's own strength
    expect(page.locator("#remix-strength-value")).to_have_text(f"{round(default * 100)}%")

    page.get_by_role("button", name="Remix").click()  # nothing written yet: said, and nothing sent
    expect(page.locator("#job-error")).to_contain_text("Write a prompt first")
    expect(page.get_by_label("Remix this video with a new prompt")).to_have_attribute("aria-invalid", "true")
    assert job_id_of(page) == source

    page.get_by_label("Remix this video with a new prompt").fill("a green circle moving left")
    strength.fill("0.5")
    expect(page.locator("#remix-strength-value")).to_have_text("50%")
    page.get_by_role("button", name="Remix").click()
    expect(page.locator("#job")).not_to_have_attribute("data-job-id", source)
    expect(page.locator("#job-status")).to_have_text(DONE, timeout=120_000)
    remix = httpx.get(f"{embedded}/v1/videos/{job_id_of(page)}").json()
    assert remix["remixed_from_video_id"] == source and remix["strength"] == 0.5
    assert remix["prompt"] == "a green circle moving left" and remix["size"] == "128x128"
    expect(page.locator("#job-meta")).to_contain_text(f"remix of {source} at 50% change")
    expect(page.locator("#job-prompt")).to_have_text("a green circle moving left")
    page.screenshot(path=str(artifacts / "remix.png"), full_page=True)

    page.get_by_label("Remix this video with a new prompt").fill("a gory massacre")  # refused by the prompt policy
    page.get_by_role("button", name="Remix").click()
    expect(page.locator("#job-error")).to_be_visible()
    expect(page.locator("#job-error")).to_contain_text("policy")
