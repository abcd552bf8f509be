"""Hostile input against a real gateway process (conftest `gateway`: real Redis, API-key mode,
no worker): schemathesis over our OpenAPI schema (no 5xx on any generated input), auth bypass
attempts, path traversal and id guessing on the content routes, oversized and pathological bodies.

The create operation reads its body by hand (JSON or the SDK's multipart form); the route
declares VideoCreate's JSON schema as its requestBody, so schemathesis fuzzes bodies too.
Jobs the fuzzer creates are deleted afterwards (the session's
worker, if another test starts one, must not spend minutes on them).
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


FUZZ_EXAMPLES = 25  # per operation; the whole fuzz stays well under a minute on 2 cores
PROTECTED = [
    ("POST", "/v1/videos"), ("GET", "/v1/videos"), ("GET", "/v1/videos/{id}"), ("DELETE", "/v1/videos/{id}"),
    ("POST", "/v1/videos/{id}/cancel"), ("GET", "/v1/videos/{id}/content"), ("GET", "/v1/videos/{id}/events"),
    ("GET", "/v1/videos/{id}/provenance"), ("GET", "/v1/models"), ("GET", "/v1/models/spacetime-tiny"),
]


def test_the_schema_describes_the_create_body(gateway: Any) -> None:
    raw = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    content = raw["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert content["application/json"]["schema"]["required"] == ["prompt"]


@pytest.fixture(scope="module")
def fuzz_key(gateway: Any) -> Iterator[str]:
    key = gateway.key("fuzz")
    yield key
    with gateway.client(key) as client:  # delete what the fuzzer queued
        while True:
            page = client.get("/v1/videos", params={"limit": 100}).json()["data"]
            if not page:
                break
            for video in page:
                client.delete(f"/v1/videos/{video['id']}")


@pytest.fixture(scope="module")
def api_schema(gateway: Any) -> Any:
    raw = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(base_url=gateway.url)
    return schema


def test_no_generated_input_gets_a_5xx(api_schema: Any, fuzz_key: str) -> None:
    """Every operation of the schema, FUZZ_EXAMPLES generated cases each, valid and invalid
    (schemathesis strategies driven by hypothesis directly: one bounded test, no plugin)."""
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                              operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)))
        def call(case: Any) -> None:
            if case.path.endswith("/events"):  # a stream: only ids that cannot exist, so it ends at once
                case.path_parameters = {**(case.path_parameters or {}), "video_id": "video_" + secrets.token_hex(12)}
            try:
                response = case.call(headers={"Authorization": f"Bearer {fuzz_key}"}, timeout=10)
            except Exception as exc:  # the client refused to send it (e.g. an illegal header): not our server
                if type(exc).__name__ in ("InvalidHeader", "LocalProtocolError", "InvalidURL", "UnicodeEncodeError"):
                    return
                raise
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                problems.append(f"{case.method} {case.formatted_path} {case.body!r:.200}: {response.status_code}")
            elif response.status_code >= 400 and set(response.json().get("error", {})) < {"message", "type", "code"}:
                problems.append(f"{case.method} {case.formatted_path}: not an OpenAI-shaped error")

        call()
    assert problems == []
    # The fuzz reached past auth and validation: successes and client errors both happened.
    assert sum(statuses.values()) >= len(operations) * FUZZ_EXAMPLES // 2, statuses
    assert statuses[200] > 0 and statuses[400] + statuses[404] > 0 and statuses[401] == 0, statuses


# ----------------------------------------------------------------------------- auth bypass

@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic dXNlcjpwYXNz", "Token sk-whatever", "Bearer sk-not-a-real-key",
    "Bearer " + "A" * 4000, "Bearer \u00e9\u00e8", "Bearer key1, Bearer key2", "Bearer%20x",
])
def test_requests_without_a_valid_key_are_401_on_every_protected_route(gateway: Any, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header.encode("utf-8")}
    video_id = "video_" + secrets.token_hex(12)
    for method, path in PROTECTED:
        response = httpx.request(method, gateway.url + path.replace("{id}", video_id), headers=headers,
                                 json={"prompt": "x"} if method == "POST" else None, timeout=10)
        assert response.status_code == 401, (method, path, header, response.status_code)
        assert response.json()["error"]["type"] == "authentication_error"


def test_a_revoked_key_stops_working(gateway: Any) -> None:
    from service.keys import create_key, revoke_key

    client = redis.Redis.from_url(gateway.redis_url, decode_responses=True)
    key_id, key = create_key(client, gateway.env["SPACETIME_KEY_PEPPER"], "to-revoke")
    assert httpx.get(f"{gateway.url}/v1/videos", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert revoke_key(client, key_id)
    assert httpx.get(f"{gateway.url}/v1/videos", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_open_access_is_refused_outside_embedded_mode(settings_for: Any) -> None:
    with pytest.raises(ValueError, match="only allowed in embedded mode"):
        settings_for(auth="open")


# ----------------------------------------------------------------------------- content routes

@pytest.fixture(scope="module")
def someone_elses_video(gateway: Any) -> tuple[str, str]:
    """A completed video of another key, with a file in storage. The record is finished directly in
    Redis (no worker here): what is under test is the gateway's access control, not generation."""
    owner_key = gateway.key("victim")
    with gateway.client(owner_key) as client:
        video = client.post("/v1/videos", json={"prompt": "a private video", "model": "spacetime-parked"}).json()
    store = redis.Redis.from_url(gateway.redis_url, decode_responses=True)
    store.hset(f"st:job:{video['id']}", mapping={"status": "completed", "progress": "100"})
    folder = gateway.data_dir / video["id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "video.mp4").write_bytes(b"\0\0\0\x18ftypisom-private-bytes")
    return owner_key, video["id"]


def test_the_owner_can_download_and_another_key_sees_404(gateway: Any, someone_elses_video: tuple[str, str]) -> None:
    owner_key, video_id = someone_elses_video
    with gateway.client(owner_key) as owner:
        assert owner.get(f"/v1/videos/{video_id}/content").content.endswith(b"private-bytes")
    with gateway.client() as stranger:
        for path in ("", "/content", "/content?variant=thumbnail", "/events", "/provenance", "/cancel"):
            method = "POST" if path == "/cancel" else "GET"
            response = stranger.request(method, f"/v1/videos/{video_id}{path}")
            assert response.status_code == 404, (path, response.status_code)
            assert b"private" not in response.content
        assert stranger.delete(f"/v1/videos/{video_id}").status_code == 404
        assert video_id not in stranger.get("/v1/videos").text
        listing = stranger.get("/v1/videos", params={"after": video_id})
        assert listing.status_code == 400 and video_id in listing.json()["error"]["message"]  # no leak of existence: same as a random id
        random_after = stranger.get("/v1/videos", params={"after": "video_" + secrets.token_hex(12)})
        assert random_after.status_code == 400
    with gateway.client(owner_key) as owner:
        assert owner.get(f"/v1/videos/{video_id}/content").status_code == 200  # the stranger's DELETE did nothing


@pytest.mark.parametrize("video_path", [
    "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "....//....//etc//passwd",
    "video_..%2f..%2f..%2fetc%2fpasswd", "%00", "video_%00", "%252e%252e%252f", "st:job:x", "*", "video_*",
])
def test_path_traversal_on_content_routes_finds_nothing(gateway: Any, video_path: str) -> None:
    with gateway.client() as client:
        for suffix in ("/content", "/content?variant=spritesheet", "/provenance", ""):
            response = client.get(f"/v1/videos/{video_path}{suffix}")
            assert response.status_code in (400, 404), (video_path, suffix, response.status_code)
            assert b"root:" not in response.content and b"ftyp" not in response.content


def test_variant_outside_the_allow_list_is_a_400(gateway: Any, someone_elses_video: tuple[str, str]) -> None:
    owner_key, video_id = someone_elses_video
    with gateway.client(owner_key) as owner:
        for variant in ("../../../etc/passwd", "metadata", "video.mp4", "provenance/../video"):
            response = owner.get(f"/v1/videos/{video_id}/content", params={"variant": variant})
            assert response.status_code == 400, variant


def test_storage_refuses_keys_that_escape_its_root(tmp_path: Any) -> None:
    from service.storage import LocalStorage

    storage = LocalStorage(tmp_path / "videos")
    for key in ("../outside.mp4", "../../etc/passwd", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError, match="escapes the root"):
            storage.size(key)


def test_guessing_ids_finds_nothing(gateway: Any) -> None:
    """Ids carry 96 random bits; near-miss and well-formed random ids are plain 404s."""
    with gateway.client() as client:
        mine = client.post("/v1/videos", json={"prompt": "mine", "model": "spacetime-parked"}).json()["id"]
        near = [mine[:-1] + ("0" if mine[-1] != "0" else "1"), mine.upper(), mine + "0", mine[:-1]]
        guesses = near + ["video_" + secrets.token_hex(12) for _ in range(50)]
        assert {client.get(f"/v1/videos/{g}/content").status_code for g in guesses} == {404}
        client.delete(f"/v1/videos/{mine}")


# ----------------------------------------------------------------------------- bodies

def test_oversized_bodies_are_413_whether_declared_or_chunked(gateway: Any) -> None:
    limit = int(gateway.env.get("SPACETIME_MAX_BODY_BYTES", 64 * 1024))
    big = json.dumps({"prompt": "x" * (limit + 1)}).encode()
    with gateway.client() as client:
        declared = client.post("/v1/videos", content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 8192):
                yield big[i:i + 8192]

        chunked = client.post("/v1/videos", content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413


def test_pathological_bodies_are_4xx_not_5xx(gateway: Any) -> None:
    nested = ("[" * 20000 + "]" * 20000).encode()  # 40 KB: under the size limit, deep enough to break a recursive parser
    multipart_fields = "&".join(f"f{i}=x" for i in range(3000))
    cases = [
        (nested, "application/json"),
        (b'{"prompt": "' + b"\xff\xfe" * 100 + b'"}', "application/json"),
        (b'{"prompt": "x", "prompt": {"$ne": 1}}', "application/json"),
        (b'{"prompt": "x", "seed": 1e400}', "application/json"),
        (b'{"prompt": "x", "seed": -1}', "application/json"),
        (b'{"prompt": "x", "num_inference_steps": 99999999999999999999}', "application/json"),
        (b'{"prompt": "x", "size": "100000x100000"}', "application/json"),
        (b'{"prompt": "x", "webhook_url": "file:///etc/passwd"}', "application/json"),
        (multipart_fields.encode(), "application/x-www-form-urlencoded"),
        (b"--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx", "multipart/form-data; boundary=b"),
        (b"<xml/>", "application/xml"),
        (b"", "application/json"),
    ]
    with gateway.client() as client:
        for body, content_type in cases:
            response = client.post("/v1/videos", content=body, headers={"Content-Type": content_type})
            assert 400 <= response.status_code < 500, (body[:40], content_type, response.status_code, response.text[:200])
            assert "error" in response.json()


def test_huge_headers_do_not_crash_the_gateway(gateway: Any) -> None:
    with gateway.client() as client:
        response = client.get("/v1/videos", headers={"X-Junk": "j" * 200_000})
        assert response.status_code < 500
        assert client.get("/v1/videos").status_code == 200  # still serving


def test_webhook_url_to_internal_addresses_is_refused(gateway: Any) -> None:
    with gateway.client() as client:
        response = client.post("/v1/videos", json={"prompt": "x", "model": "spacetime-parked",
                                                   "webhook_url": "http://169.254.169.254/latest/meta-data/"})
        if response.status_code == 200:
            client.delete(f"/v1/videos/{response.json()['id']}")
        assert response.status_code == 400
