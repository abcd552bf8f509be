"""Standard Webhooks signatures: what a receiver checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from service import webhooks

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    headers, body = webhooks.build(SECRET, "msg_1", "video.completed", {"id": "video_1"})
    signed = f"msg_1.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(b"0123456789abcdef0123456789abcdef", signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert webhooks.verify(SECRET, headers, body)["data"] == {"id": "video_1"}


def test_tampering_wrong_secret_and_stale_timestamps_are_rejected() -> None:
    headers, body = webhooks.build(SECRET, "msg_1", "video.failed", {"id": "video_1"})
    with pytest.raises(ValueError, match="does not match"):
        webhooks.verify(SECRET, headers, body.replace(b"video_1", b"video_2"))
    with pytest.raises(ValueError, match="does not match"):
        webhooks.verify("whsec_" + base64.b64encode(b"other").decode(), headers, body)
    with pytest.raises(ValueError, match="tolerance"):
        webhooks.verify(SECRET, headers, body, now=time.time() + 3600)
    with pytest.raises(ValueError, match="missing"):
        webhooks.verify(SECRET, {}, body)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:6379/", "http://localhost/",
    "http://10.0.0.5/hook", "http://[::1]/hook", "http://192.168.1.1/", "http://0.0.0.0/", "ftp://example.com/",
    "http://no-such-host.invalid/",
])
def test_webhook_urls_to_internal_or_unresolvable_hosts_are_refused(url: str) -> None:
    assert webhooks.refusal(url) is not None


def test_the_allow_list_admits_named_hosts_and_ranges() -> None:
    assert webhooks.refusal("http://127.0.0.1:9000/hook", "127.0.0.1") is None
    assert webhooks.refusal("http://10.1.2.3/hook", "10.0.0.0/8") is None
    assert webhooks.refusal("http://10.1.2.3/hook", "127.0.0.1") is not None
    assert webhooks.refusal("http://8.8.8.8/hook") is None  # a public address (no DNS needed)
