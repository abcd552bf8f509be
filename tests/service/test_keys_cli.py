"""`spacetime keys create|list|revoke` as a real process against the gateway's Redis."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from tests.conftest import ROOT, Stack


def keys(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers.cli", "keys", *args], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=60)


def test_create_list_revoke(gateway: Stack) -> None:
    made = keys(gateway, "create", "--name", "cli-test")
    assert made.returncode == 0, made.stderr
    key_id = re.search(r"id:\s+(key_\w+)", made.stdout).group(1)
    key = re.search(r"key:\s+(\S+)", made.stdout).group(1)
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{gateway.url}/v1/videos", headers=auth).status_code == 200
    listed = keys(gateway, "list").stdout
    assert re.search(rf"{key_id}\s+active .* cli-test", listed) and key not in listed
    assert keys(gateway, "revoke", key_id).returncode == 0
    assert re.search(rf"{key_id}\s+revoked", keys(gateway, "list").stdout)
    assert httpx.get(f"{gateway.url}/v1/videos", headers=auth).status_code == 401
    missing = keys(gateway, "revoke", "key_nope")
    assert missing.returncode == 1 and "no key with id" in missing.stderr
