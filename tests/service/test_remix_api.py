"""POST /v1/videos/{id}/remix against the real gateway process and a real Redis, no worker: the
source videos are parked jobs completed by hand (a stand-in worker claims and completes them and
a file is put where the MP4 would be), so the remixes stay queued and their records can be read."""

from __future__ import annotations

import time

import pytest
import redis

from service.jobs import WorkerJobs
from tests.conftest import Stack
from tests.service.test_videos_api import PARKED, error_of


def completed_source(gateway: Stack, client, body: dict | None = None, with_file: bool = True) -> dict:
    """A parked video, completed by a stand-in worker; its MP4 is a placeholder file (the gateway
    only checks that it exists; the worker-side remix is tested in tests/workers/test_remix_jobs.py)."""
    video = client.post("/v1/videos", json=body or {**PARKED, "seed": 5, "negative_prompt": "blurry"}).json()
    r = redis.Redis.from_url(gateway.redis_url, decode_responses=True)
    jobs = WorkerJobs(r, "remix-test-worker")
    assert jobs.claim(video["id"], 3)[0] == "claimed"
    assert jobs.complete(video["id"], int(time.time()) + 3600, {"num_frames": "9"}) == "ok"
    if with_file:
        folder = gateway.data_dir / video["id"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "video.mp4").write_bytes(b"\x00" * 64)
    return client.get(f"/v1/videos/{video['id']}").json()


def test_a_remix_takes_the_sources_shape_and_settings_and_a_new_seed(gateway: Stack) -> None:
    with gateway.client() as c:
        source = completed_source(gateway, c)
        assert source["status"] == "completed" and source["remixed_from_video_id"] is None
        resp = c.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a green square"})
        assert resp.status_code == 200, resp.text
        remix = resp.json()
        assert remix["id"] != source["id"] and remix["status"] == "queued"
        assert remix["remixed_from_video_id"] == source["id"] and remix["prompt"] == "a green square"
        for name in ("model", "size", "seconds", "fps", "num_inference_steps", "guidance_scale", "negative_prompt",
                     "quality"):
            assert remix[name] == source[name], name
        strength = c.get("/v1/models/spacetime-parked").json()["remix_strength"]
        assert remix["strength"] == strength and 0 < strength < 1
        assert c.get(f"/v1/videos/{remix['id']}").json()["remixed_from_video_id"] == source["id"]
        assert source["strength"] is None  # not a remix


def test_a_remix_takes_its_own_options_as_form_fields_like_the_sdk(gateway: Stack) -> None:
    with gateway.client() as c:
        source = completed_source(gateway, c)
        remix = c.post(f"/v1/videos/{source['id']}/remix", data={
            "prompt": "a white circle", "strength": "0.35", "seed": "9", "negative_prompt": "",
            "num_inference_steps": "2", "guidance_scale": "", "quality": "fast"}).json()
        assert (remix["strength"], remix["seed"], remix["negative_prompt"]) == (0.35, 9, "")
        assert remix["num_inference_steps"] == 2 and remix["quality"] == "fast"
        assert remix["guidance_scale"] == source["guidance_scale"]  # an empty field is "not given"


def test_a_remix_replays_with_its_idempotency_key_and_refuses_another_source(gateway: Stack) -> None:
    with gateway.client() as c:
        first_source, second_source = completed_source(gateway, c), completed_source(gateway, c)
        headers = {"Idempotency-Key": "remix-1"}
        first = c.post(f"/v1/videos/{first_source['id']}/remix", json={"prompt": "p"}, headers=headers)
        again = c.post(f"/v1/videos/{first_source['id']}/remix", json={"prompt": "p"}, headers=headers)
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        other = c.post(f"/v1/videos/{second_source['id']}/remix", json={"prompt": "p"}, headers=headers)
        assert error_of(other, 409)["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({}, "prompt", "required"),
        ({"prompt": ""}, "prompt", "at least 1"),
        ({"prompt": "x", "strength": 0}, "strength", "greater than 0"),
        ({"prompt": "x", "strength": 1.5}, "strength", "less than or equal to 1"),
        ({"prompt": "x", "size": "128x128"}, "size", "unknown parameter"),
        ({"prompt": "x", "model": "spacetime-tiny"}, "model", "unknown parameter"),
        ({"prompt": "x", "num_inference_steps": 1000}, "num_inference_steps", "limit"),
        ({"prompt": "x", "guidance_scale": 0.5}, "guidance_scale", "greater"),
        ({"prompt": "x", "quality": "best"}, "quality", "exact"),
        ({"prompt": "x", "webhook_url": "ftp://x"}, "webhook_url", "http"),
        ({"prompt": "x" * 2001}, "prompt", "limit is 2000"),
    ],
)
def test_invalid_remix_requests_are_400_and_queue_nothing(gateway: Stack, body: dict, param: str, words: str) -> None:
    with gateway.client() as c:
        source = completed_source(gateway, c)
        err = error_of(c.post(f"/v1/videos/{source['id']}/remix", json=body), 400)
        assert err["param"] == param and words in err["message"], err
        assert [v["id"] for v in c.get("/v1/videos").json()["data"]] == [source["id"]]


def test_a_remix_needs_a_completed_video_of_the_caller_with_its_content(gateway: Stack) -> None:
    with gateway.client() as c, gateway.client() as other:
        assert error_of(c.post("/v1/videos/video_missing/remix", json={"prompt": "x"}), 404)["code"] == "video_not_found"
        queued = c.post("/v1/videos", json=PARKED).json()
        err = error_of(c.post(f"/v1/videos/{queued['id']}/remix", json={"prompt": "x"}), 409)
        assert err["code"] == "video_not_ready" and "remixed" in err["message"]
        source = completed_source(gateway, c)
        assert error_of(other.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "x"}), 404)["code"] == "video_not_found"
        gone = completed_source(gateway, c, with_file=False)  # expired: its files were swept
        assert error_of(c.post(f"/v1/videos/{gone['id']}/remix", json={"prompt": "x"}), 410)["code"] == "video_expired"
        assert error_of(c.post(f"/v1/videos/{source['id']}/remix", content=b"{", headers={
            "content-type": "application/json"}), 400)["code"] == "invalid_json"


def test_a_model_that_cannot_remix_or_is_no_longer_served_refuses_it(gateway: Stack) -> None:
    with gateway.client() as c:
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert models["spacetime-tiny"]["remix"] is True and models["spacetime-tiny-b"]["remix"] is False
        source = completed_source(gateway, c, {"model": "spacetime-tiny-b", "prompt": "a blue square", "seconds": "1"})
        err = error_of(c.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "x"}), 400)
        assert err["code"] == "remix_not_supported"
        # A video whose model the operator has since removed from the catalogue.
        served = completed_source(gateway, c)
        redis.Redis.from_url(gateway.redis_url, decode_responses=True).hset(f"st:job:{served['id']}", "model", "retired")
        err = error_of(c.post(f"/v1/videos/{served['id']}/remix", json={"prompt": "x"}), 409)
        assert err["code"] == "model_not_found" and "retired" in err["message"]


def test_a_remix_prompt_goes_through_the_prompt_policy(gateway: Stack) -> None:
    with gateway.client() as c:
        source = completed_source(gateway, c)
        err = error_of(c.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a gory massacre"}), 400)
        assert err["code"] == "content_policy_violation" and err["param"] == "prompt"
        err = error_of(c.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a cat",
                                                                         "negative_prompt": "Taylor Swift"}), 400)
        assert err["param"] == "negative_prompt"
        assert [v["id"] for v in c.get("/v1/videos").json()["data"]] == [source["id"]]
