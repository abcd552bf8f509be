"""The gateway app: `create_app(settings)` wires Redis, storage, the catalogue and the routers.

Run it with `spacetime serve` (or `uvicorn service.main:create_app --factory`). This module and
everything it imports stay torch-free, so the gateway starts in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import keys
from service.catalog import Catalog
from service.config import Settings, get_settings
from service.errors import ApiError, error_response, install_error_handlers
from service.jobs import JobStore, now_s
from service.logs import configure_logging
from service.routers import health, models, videos
from service.storage import Storage, open_storage

log = logging.getLogger("spacetime.service")


class BodyLimit:
    """413 for bodies above `max_bytes`, by Content-Length up front or by counting a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        too_big = error_response(413, f"The request body is larger than {self.max_bytes} bytes.",
                                 code="request_too_large")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await too_big(scope, receive, send)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await too_big(scope, receive, send)


class _TooLarge(Exception):
    pass


def load_prompt_policy() -> Callable[[dict[str, Any]], None]:
    """The prompt policy (service/safety.py), run on the resolved request before anything is
    queued; a rejection is a 400 with code content_policy_violation. A broken policy file
    fails here, at startup, not on the first request."""
    from service import safety

    safety.get_policy()

    def check(spec: dict[str, Any]) -> None:
        decision = safety.check_request(spec["prompt"], spec.get("negative_prompt"))
        if not decision.allowed:
            error = safety.policy_error(decision)["error"]
            log.info("prompt rejected by policy", extra={"prompt_sha256": decision.prompt_sha256,
                                                         "category": decision.category})
            raise ApiError(400, error["message"], code=error["code"], param=error["param"])

    return check


async def sweep_expired(jobs: JobStore, storage: Storage, interval_s: float) -> None:
    """Delete assets whose TTL has passed; the job record stays, its content answers 410."""
    while True:
        try:
            for job_id in await jobs.expired(now_s()):
                await asyncio.to_thread(storage.delete_job, job_id)
                await jobs.forget_expiry(job_id)
                log.info("video assets expired", extra={"job_id": job_id})
        except Exception as exc:  # keep sweeping after a Redis blip
            log.warning("expiry sweep failed: %s", exc)
        await asyncio.sleep(interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, max_connections=256)
        app.state.redis = client
        app.state.jobs = JobStore(client)
        app.state.storage = open_storage(settings)
        app.state.authorize = client.register_script(keys.AUTHORIZE)
        app.state.count_create = client.register_script(keys.COUNT_CREATE)
        app.state.celery = Celery("spacetime-gateway", broker=settings.redis_url, set_as_current=False)
        sweeper = asyncio.create_task(sweep_expired(app.state.jobs, app.state.storage, settings.cleanup_interval_s))
        log.info("gateway started", extra={"redis_url": settings.redis_url, "auth": settings.auth})
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await client.aclose()

    app = FastAPI(title="Spacetime", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.catalog = Catalog.load(settings.models_file)
    app.state.check_prompt = load_prompt_policy()
    install_error_handlers(app)
    app.include_router(videos.router)
    app.include_router(models.router)
    app.include_router(health.router)
    try:  # the web page (service/web.py) is optional for the API
        from service import web
    except ImportError:
        pass
    else:
        app.include_router(web.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
