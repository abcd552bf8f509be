"""Per-key limits, body size and prompt policy, on an in-process app (real Redis) whose
settings are tightened so each limit is reached in a handful of requests."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from service.keys import create_key, revoke_key
from service.main import create_app
from tests.conftest import PEPPER

PARKED = {"model": "spacetime-parked", "prompt": "a green triangle", "seconds": "1"}


def app_client(settings_for, redis_url: str, **limits) -> tuple[TestClient, redis.Redis]:
    client = TestClient(create_app(settings_for(**limits)))
    return client, redis.Redis.from_url(redis_url, decode_responses=True)


def auth(r: redis.Redis) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(r, PEPPER, 'limits')[1]}"}


def test_request_rate_limit_is_429_with_retry_after(settings_for, redis_url) -> None:
    c, r = app_client(settings_for, redis_url, rate_limit_per_minute=5)
    with c:
        headers = auth(r)
        codes = [c.get("/v1/videos", headers=headers).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        resp = c.get("/v1/videos", headers=headers)
        assert resp.json()["error"]["code"] == "rate_limit_exceeded"
        assert resp.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(resp.headers["retry-after"]) <= 60
        assert c.get("/v1/videos", headers=auth(r)).status_code == 200  # the limit is per key


def test_create_limit_per_minute(settings_for, redis_url) -> None:
    c, r = app_client(settings_for, redis_url, create_limit_per_minute=2)
    with c:
        headers = auth(r)
        codes = [c.post("/v1/videos", json=PARKED, headers=headers).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_cap_on_concurrent_jobs_frees_a_slot_when_one_ends(settings_for, redis_url) -> None:
    c, r = app_client(settings_for, redis_url, max_active_jobs=2)
    with c:
        headers = auth(r)
        ids = [c.post("/v1/videos", json=PARKED, headers=headers).json()["id"] for _ in range(2)]
        over = c.post("/v1/videos", json=PARKED, headers=headers)
        assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_active_jobs"
        assert over.headers["retry-after"]
        c.post(f"/v1/videos/{ids[0]}/cancel", headers=headers)
        assert c.post("/v1/videos", json=PARKED, headers=headers).status_code == 200


def test_body_over_the_limit_is_413(settings_for, redis_url) -> None:
    c, r = app_client(settings_for, redis_url, max_body_bytes=2048)
    with c:
        headers = auth(r)
        resp = c.post("/v1/videos", json={**PARKED, "prompt": "x" * 4000}, headers=headers)
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"

        def chunks():  # no Content-Length: counted while streaming
            for _ in range(8):
                yield b"x" * 1024

        streamed = c.post("/v1/videos", content=chunks(), headers={**headers, "content-type": "application/json"})
        assert streamed.status_code == 413


def test_revoked_key_is_refused(settings_for, redis_url) -> None:
    c, r = app_client(settings_for, redis_url)
    with c:
        key_id, key = create_key(r, PEPPER, "to-revoke")
        headers = {"Authorization": f"Bearer {key}"}
        assert c.get("/v1/videos", headers=headers).status_code == 200
        assert revoke_key(r, key_id)
        resp = c.get("/v1/videos", headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
        assert not r.exists(f"st:key:{key}")  # only hashes are stored, never the key


def test_prompt_policy_rejects_before_queueing(settings_for, redis_url) -> None:
    c, r = app_client(settings_for, redis_url)
    with c:
        headers = auth(r)
        resp = c.post("/v1/videos", json={**PARKED, "prompt": "a man kills a child"}, headers=headers)
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "content_policy_violation" and resp.json()["error"]["param"] == "prompt"
        assert c.get("/v1/videos", headers=headers).json()["data"] == []


def test_a_models_time_limits_are_its_own_else_the_default_and_the_hard_one_follows():
    from service.catalog import BUILTIN_MODELS, HARD_LIMIT_GRACE_S

    tiny = BUILTIN_MODELS["spacetime-tiny"]
    assert tiny.time_limit_s is None and tiny.time_limits_s(1800) == (1800, 1800 + HARD_LIMIT_GRACE_S)
    capped = tiny.model_copy(update={"time_limit_s": 3})
    assert capped.time_limits_s(1800) == (3, 3 + HARD_LIMIT_GRACE_S)
