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


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_jobs(request: Request) -> JobStore:
    return request.app.state.jobs


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


async def authenticate(request: Request) -> Principal:
    """Bearer key -> owner, with the per-key request rate limit in the same Redis call."""
    state = request.app.state
    settings: Settings = state.settings
    digest = ""
    if settings.auth == "keys":
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "Missing API key. Send it as 'Authorization: Bearer <key>' (create one with `spacetime keys create`).",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(token.strip(), settings.key_pepper)
    owner, retry_s = await state.authorize(
        args=[digest, OPEN_OWNER, settings.rate_limit_per_minute, 60, int(time.time())]
    )
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


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
