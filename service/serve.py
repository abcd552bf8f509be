"""`spacetime serve`: the HTTP gateway alone, against any Redis URL (keys required off loopback)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: SPACETIME_REDIS_URL)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")


def run(args: argparse.Namespace) -> int:
    if args.redis_url:
        os.environ["SPACETIME_REDIS_URL"] = args.redis_url
    from service.config import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (settings.auth != "keys" or settings.embedded) and not is_loopback(args.host):
        print(f"error: binding {args.host} needs API keys; open access is only allowed on loopback", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(
        "service.main:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
        access_log=False, log_config=None, loop="uvloop", http="httptools", timeout_graceful_shutdown=3,
    )
    return 0
