"""FastAPI dependencies: the app's shared objects and the caller's identity, as Annotated aliases."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from service.catalog import Catalog
from service.config import Settings
from service.errors import ApiError
from service.jobs import JobStore
from service.keys import hash_key
from service.storage import Storage

OPEN_OWNER = "local"  # every job's owner in open (embedded) mode


@dataclass(frozen=True)
class Principal:
    owner: str


# Dependencies are `async def` even where they do no I/O: FastAPI runs plain `def` dependencies
# in a thread pool, which costs more than the whole status poll.
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_jobs(request: Request) -> JobStore:
    return request.app.state.jobs


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


async def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


def key_digest(request: Request, settings: Settings) -> str:
    """The hashed Bearer key ('' in open mode); 401 when keys are required and none was sent."""
    if settings.auth != "keys":
        return ""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "Missing API key. Send it as 'Authorization: Bearer <key>' (create one with `spacetime keys create`).",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return hash_key(token.strip(), settings.key_pepper)


def auth_args(request: Request, settings: Settings) -> list[str | int]:
    """ARGV of the AUTHORIZE Lua function: digest, open-mode owner, limit, window, now."""
    return [key_digest(request, settings), OPEN_OWNER, settings.rate_limit_per_minute, 60, int(time.time())]


def check_authorized(owner: str, retry_s: str, settings: Settings) -> Principal:
    """AUTHORIZE's answer -> the caller, or 401 / 429."""
    if not owner:
        raise ApiError(401, "Incorrect or revoked API key.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if int(retry_s) > 0:
        raise ApiError(
            429,
            f"Rate limit reached: {settings.rate_limit_per_minute} requests per minute per key. Retry in {retry_s} s.",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry_s)},
        )
    return Principal(owner=owner)


async def authenticate(request: Request) -> Principal:
    """Bearer key -> owner, with the per-key request rate limit in the same Redis call."""
    settings: Settings = request.app.state.settings
    owner, retry_s = await request.app.state.authorize(args=auth_args(request, settings))
    return check_authorized(owner, retry_s, settings)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
