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
