"""Liveness, readiness and Prometheus metrics (no auth: for load balancers and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from service import metrics
from service.deps import CatalogDep, JobsDep, RedisDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about Redis or workers)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(redis: RedisDep, jobs: JobsDep, catalog: CatalogDep) -> JSONResponse:
    """200 when Redis answers; lists which models have live workers (a model without one
    still accepts jobs, they wait in its queue)."""
    try:
        await redis.ping()
        live = await jobs.live_workers(catalog.names())
    except (RedisError, OSError) as exc:
        body = {"error": {"message": f"Redis is unreachable: {exc}", "type": "server_error",
                          "param": None, "code": "redis_unavailable"}}
        return JSONResponse(body, status_code=503)
    return JSONResponse({
        "status": "ready",
        "redis": "ok",
        "models": {name: {"live_workers": n, "ready": n > 0} for name, n in live.items()},
    })


@router.get("/metrics")
async def prometheus_metrics(redis: RedisDep, jobs: JobsDep, catalog: CatalogDep) -> Response:
    names = catalog.names()
    live = await jobs.live_workers(names)
    return Response(await metrics.render(redis, names, live), media_type=CONTENT_TYPE_LATEST)
