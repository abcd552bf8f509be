"""The `quality` extension of POST /v1/videos: "exact" (default) or "fast" (opt-in fast mode),
validated by the gateway, stored on the job, returned with the video."""

from __future__ import annotations

import redis

from tests.conftest import Stack
from tests.service.test_videos_api import PARKED, error_of


def test_quality_defaults_to_exact_and_fast_is_stored_on_the_job(gateway: Stack) -> None:
    r = redis.Redis.from_url(gateway.redis_url, decode_responses=True)
    with gateway.client() as c:
        plain = c.post("/v1/videos", json=PARKED).json()
        assert plain["quality"] == "exact" and r.hget(f"st:job:{plain['id']}", "quality") == "exact"
        fast = c.post("/v1/videos", json={**PARKED, "quality": "fast"}).json()
        assert fast["quality"] == "fast" and r.hget(f"st:job:{fast['id']}", "quality") == "fast"
        assert c.get(f"/v1/videos/{fast['id']}").json()["quality"] == "fast"
        form = c.post("/v1/videos", data={**PARKED, "quality": "fast"}).json()  # the SDK's multipart form
        assert form["quality"] == "fast"


def test_an_unknown_quality_is_400_naming_the_allowed_values(gateway: Stack) -> None:
    with gateway.client() as c:
        for bad in ("turbo", "", 1, None):
            err = error_of(c.post("/v1/videos", json={**PARKED, "quality": bad}), 400)
            assert err["param"] == "quality" and err["type"] == "invalid_request_error"
            assert "'exact' or 'fast'" in err["message"], err["message"]


def test_a_model_without_fast_mode_refuses_it_up_front_and_lists_what_it_takes(gateway: Stack) -> None:
    with gateway.client() as c:
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert models["spacetime-tiny"]["qualities"] == ["exact", "fast"]
        assert models["spacetime-tiny-b"]["qualities"] == ["exact"]  # the models file says so
        err = error_of(c.post("/v1/videos", json={**PARKED, "model": "spacetime-tiny-b", "quality": "fast"}), 400)
        assert err["param"] == "quality" and err["code"] == "invalid_value"
        assert err["message"] == "Invalid quality 'fast' for model 'spacetime-tiny-b'; allowed: exact."
        assert c.post("/v1/videos", json={**PARKED, "model": "spacetime-tiny-b"}).status_code == 200  # exact

