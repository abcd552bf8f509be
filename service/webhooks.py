"""Webhook payloads signed the Standard Webhooks way (https://www.standardwebhooks.com/).

Headers: `webhook-id` (stable across retries, so receivers can drop duplicates),
`webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
`"{id}.{timestamp}.{body}"`. The secret is `whsec_<base64 key>`; any other string is used as
raw key bytes. `verify` is what a receiver runs (and what the tests run).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

TOLERANCE_S = 300  # receivers reject timestamps further than this from their clock


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def build(secret: str, msg_id: str, event_type: str, data: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """Headers and body for one delivery attempt (fresh timestamp each attempt)."""
    timestamp = int(time.time())
    body = json.dumps({"type": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":")).encode()
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "user-agent": "spacetime-webhooks/1",
    }
    return headers, body


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> dict[str, Any]:
    """Check the signature and timestamp; return the decoded payload or raise ValueError."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, timestamp = lower["webhook-id"], int(lower["webhook-timestamp"])
        signatures = lower["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise ValueError(f"missing or malformed webhook headers: {exc}") from exc
    if abs((now or time.time()) - timestamp) > TOLERANCE_S:
        raise ValueError("webhook timestamp outside the tolerance window")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise ValueError("webhook signature does not match")
    return json.loads(body)


def refusal(url: str, allow_hosts: str = "") -> str | None:
    """Why a webhook URL must not be called, or None when it may.

    Server-side request forgery guard: the host (every address it resolves to) must be a public
    address; loopback, private, link-local (cloud metadata at 169.254.169.254), multicast and
    reserved ranges are refused unless the host or address is listed in `allow_hosts`
    (comma-separated host names, addresses or CIDRs, e.g. "127.0.0.1,hooks.internal"). Checked
    when the job is created and again by the worker just before each delivery.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook_url must be an http:// or https:// URL with a host"
    host = parts.hostname.lower()
    allowed = [a.strip().lower() for a in allow_hosts.split(",") if a.strip()]
    if host in allowed:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        return f"webhook_url host {host!r} does not resolve ({exc})"
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            pass  # a host name, handled above
    for raw in addresses:
        address = ipaddress.ip_address(raw.split("%")[0])
        if any(address in net for net in networks):
            continue
        if not address.is_global or address.is_multicast:
            return (f"webhook_url host {host!r} resolves to {address}, a non-public address; "
                    "add it to SPACETIME_WEBHOOK_ALLOW_HOSTS to allow it")
    return None
