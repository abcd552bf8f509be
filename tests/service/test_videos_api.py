"""The /v1 API against the real gateway process and a real Redis (no worker: jobs go to the
never-served `spacetime-parked` model, so they stay queued)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Stack

PARKED = {"model": "spacetime-parked", "prompt": "a blue square", "seconds": "1", "size": "128x128"}


def error_of(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_create_as_multipart_form_like_the_sdk_and_retrieve(gateway: Stack) -> None:
    with gateway.client() as c:
        resp = c.post("/v1/videos", data={**PARKED, "seed": "42", "negative_prompt": "blurry",
                                          "num_inference_steps": "3", "guidance_scale": "4.5"})
        assert resp.status_code == 200, resp.text
        video = resp.json()
        assert video["object"] == "video" and video["id"].startswith("video_")
        assert video["status"] == "queued" and video["progress"] == 0
        assert (video["seed"], video["negative_prompt"], video["num_inference_steps"], video["guidance_scale"]) == (
            42, "blurry", 3, 4.5)
        assert video["fps"] == 8 and video["seconds"] == "1" and video["size"] == "128x128"
        assert resp.headers["openai-poll-after-ms"] == "200"
        got = c.get(f"/v1/videos/{video['id']}")
        assert got.status_code == 200 and got.headers["openai-poll-after-ms"] == "200"
        assert got.json()["id"] == video["id"] and got.json()["queue_position"] is not None


def test_create_as_json_fills_model_defaults_and_a_seed(gateway: Stack) -> None:
    with gateway.client() as c:
        video = c.post("/v1/videos", json={"model": "spacetime-parked", "prompt": "x"}).json()
        assert video["size"] == "128x128" and video["seconds"] == "1" and video["num_inference_steps"] == 2
        assert isinstance(video["seed"], int) and video["guidance_scale"] == 5.0


def test_queue_position_counts_the_jobs_ahead(gateway: Stack) -> None:
    with gateway.client() as c:
        first = c.post("/v1/videos", json=PARKED).json()
        second = c.post("/v1/videos", json=PARKED).json()
        assert second["queue_position"] > c.get(f"/v1/videos/{first['id']}").json()["queue_position"]


def test_list_paginates_with_a_cursor_in_both_orders(gateway: Stack) -> None:
    with gateway.client() as c:
        ids = [c.post("/v1/videos", json=PARKED).json()["id"] for _ in range(5)]
        page = c.get("/v1/videos", params={"limit": 2}).json()
        assert page["object"] == "list" and page["has_more"] is True
        assert [v["id"] for v in page["data"]] == ids[::-1][:2]
        assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
        seen = [v["id"] for v in page["data"]]
        while page["has_more"]:
            page = c.get("/v1/videos", params={"limit": 2, "after": page["last_id"]}).json()
            seen += [v["id"] for v in page["data"]]
        assert seen == ids[::-1]
        asc = c.get("/v1/videos", params={"limit": 10, "order": "asc"}).json()
        assert [v["id"] for v in asc["data"]] == ids and asc["has_more"] is False
        empty = gateway.client().get("/v1/videos").json()
        assert empty == {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}


def test_delete_removes_the_video(gateway: Stack) -> None:
    with gateway.client() as c:
        video_id = c.post("/v1/videos", json=PARKED).json()["id"]
        assert c.delete(f"/v1/videos/{video_id}").json() == {"id": video_id, "object": "video.deleted", "deleted": True}
        error_of(c.get(f"/v1/videos/{video_id}"), 404)
        error_of(c.delete(f"/v1/videos/{video_id}"), 404)


def test_cancel_a_queued_video_fails_it_at_once(gateway: Stack) -> None:
    with gateway.client() as c:
        video_id = c.post("/v1/videos", json=PARKED).json()["id"]
        video = c.post(f"/v1/videos/{video_id}/cancel").json()
        assert video["status"] == "failed" and video["error"]["code"] == "cancelled"
        assert error_of(c.post(f"/v1/videos/{video_id}/cancel"), 409)["code"] == "video_not_cancellable"


def test_another_keys_videos_are_404(gateway: Stack) -> None:
    with gateway.client() as alice, gateway.client() as bob:
        video_id = alice.post("/v1/videos", json=PARKED).json()["id"]
        for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/cancel"), ("GET", "/content"), ("GET", "/events")]:
            err = error_of(bob.request(method, f"/v1/videos/{video_id}{path}"), 404)
            assert err["code"] == "video_not_found"
        assert bob.get("/v1/videos").json()["data"] == []
        assert alice.get(f"/v1/videos/{video_id}").status_code == 200


def test_idempotency_key_replays_the_same_video_and_refuses_other_parameters(gateway: Stack) -> None:
    with gateway.client() as c:
        headers = {"Idempotency-Key": "order-17"}
        first = c.post("/v1/videos", json=PARKED, headers=headers)
        again = c.post("/v1/videos", json=PARKED, headers=headers)
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        assert len(c.get("/v1/videos").json()["data"]) == 1
        err = error_of(c.post("/v1/videos", json={**PARKED, "prompt": "other"}, headers=headers), 409)
        assert err["code"] == "idempotency_key_reused"
    with gateway.client() as other:  # keys are scoped per API key
        assert other.post("/v1/videos", json=PARKED, headers=headers).json()["id"] != first.json()["id"]


def test_models_lists_sizes_durations_and_defaults(gateway: Stack) -> None:
    with gateway.client() as c:
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        tiny = models["spacetime-tiny"]
        assert tiny["sizes"] == ["128x128", "160x96", "96x160"] and tiny["seconds"] == ["1", "2", "3", "4"]
        assert (tiny["fps"], tiny["default_steps"], tiny["default_guidance"]) == (8, 20, 3.0)
        assert "spacetime-tiny-b" in models  # from SPACETIME_MODELS_FILE
        assert c.get("/v1/models/spacetime-tiny").json()["id"] == "spacetime-tiny"
        assert error_of(c.get("/v1/models/nope"), 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"prompt": "x", "size": "1920x1080"}, "size", "128x128, 160x96, 96x160"),
        ({"prompt": "x", "seconds": "9"}, "seconds", "1, 2, 3, 4"),
        ({"prompt": "x", "seconds": 12}, "seconds", "allowed"),
        ({"prompt": "x", "model": "sora-2"}, "model", "spacetime-tiny"),
        ({"prompt": "x", "fps": 24}, "fps", "allowed: 8"),
        ({"prompt": "x", "num_inference_steps": 1000}, "num_inference_steps", "limit"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", "greater"),
        ({"prompt": "x", "guidance_scale": 0.5}, "guidance_scale", "greater"),
        ({"prompt": "x", "seed": -1}, "seed", "greater"),
        ({"prompt": ""}, "prompt", "at least 1"),
        ({"size": "128x128"}, "prompt", "required"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown parameter"),
        ({"prompt": "x", "webhook_url": "ftp://x"}, "webhook_url", "http"),
        ({"prompt": "x" * 2001}, "prompt", "limit is 2000"),
        ({"prompt": "x", "input_reference": "img"}, "input_reference", "not supported"),
    ],
)
def test_invalid_create_requests_are_400_with_the_allowed_values(gateway: Stack, body: dict, param: str, words: str) -> None:
    with gateway.client() as c:
        err = error_of(c.post("/v1/videos", json=body), 400)
        assert err["param"] == param and err["type"] == "invalid_request_error"
        assert words in err["message"], err["message"]


def test_malformed_bodies_are_400(gateway: Stack) -> None:
    with gateway.client() as c:
        assert error_of(c.post("/v1/videos", content=b"{nope", headers={"content-type": "application/json"}), 400)["code"] == "invalid_json"
        assert error_of(c.post("/v1/videos", content=b"[1]", headers={"content-type": "application/json"}), 400)["code"] == "invalid_json"
        assert error_of(c.post("/v1/videos", content=b"prompt", headers={"content-type": "text/plain"}), 400)["code"] == "unsupported_content_type"
        upload = c.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("a.png", b"\x89PNG", "image/png")})
        assert error_of(upload, 400)["param"] == "input_reference"


def test_query_and_route_errors(gateway: Stack) -> None:
    with gateway.client() as c:
        assert error_of(c.get("/v1/videos", params={"limit": 0}), 400)["param"] == "limit"
        assert error_of(c.get("/v1/videos", params={"order": "up"}), 400)["param"] == "order"
        assert error_of(c.get("/v1/videos", params={"after": "video_missing"}), 400)["param"] == "after"
        assert error_of(c.get("/v1/videos/video_missing"), 404)["code"] == "video_not_found"
        video_id = c.post("/v1/videos", json=PARKED).json()["id"]
        assert error_of(c.get(f"/v1/videos/{video_id}/content", params={"variant": "gif"}), 400)["param"] == "variant"
        assert error_of(c.get(f"/v1/videos/{video_id}/content"), 409)["code"] == "video_not_ready"
        error_of(c.get("/v2/nothing"), 404)
        error_of(c.put("/v1/videos"), 405)


def test_auth_errors_are_401(gateway: Stack) -> None:
    with httpx.Client(base_url=gateway.url) as anon:
        assert error_of(anon.get("/v1/videos"), 401)["code"] == "missing_api_key"
        assert error_of(anon.get("/v1/videos", headers={"Authorization": "Basic abc"}), 401)["code"] == "missing_api_key"
        err = error_of(anon.get("/v1/videos", headers={"Authorization": "Bearer sk-st-wrong"}), 401)
        assert err["code"] == "invalid_api_key" and err["type"] == "authentication_error"
        assert anon.get("/healthz").status_code == 200  # health needs no key


def test_events_stream_reports_queue_position_then_failure_on_cancel(gateway: Stack) -> None:
    with gateway.client() as c:
        c.post("/v1/videos", json=PARKED)
        video_id = c.post("/v1/videos", json=PARKED).json()["id"]
        events: list[tuple[str, dict]] = []
        with c.stream("GET", f"/v1/videos/{video_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[len("data: "):])))
                    if name == "queued":
                        c.post(f"/v1/videos/{video_id}/cancel")
        assert events[0][0] == "queued" and events[0][1]["queue_position"] >= 1
        assert events[-1][0] == "failed" and events[-1][1]["error"]["code"] == "cancelled"


def test_health_readiness_and_metrics(gateway: Stack) -> None:
    with httpx.Client(base_url=gateway.url) as anon:
        ready = anon.get("/readyz").json()
        assert ready["status"] == "ready" and ready["models"]["spacetime-parked"] == {"live_workers": 0, "ready": False}
        text = anon.get("/metrics").text
        assert 'spacetime_jobs{status="queued"}' in text
        assert 'spacetime_queue_depth{model="spacetime-parked"}' in text
        assert "spacetime_denoise_step_seconds_bucket" in text and "spacetime_generation_seconds_count" in text
