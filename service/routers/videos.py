"""/v1/videos: create, remix, retrieve, list, delete, cancel, download content, server-sent events."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from service import webhooks
from service.catalog import ServedModel
from service.config import Settings
from service.deps import (CatalogDep, JobsDep, PrincipalDep, RedisDep, SettingsDep, StorageDep, auth_args,
                          check_authorized)
from service.errors import ApiError, not_found
from service.jobs import JobStore, events_channel, fingerprint
from service.ranges import parse_range
from service.schemas import VideoCreate, VideoDeleted, VideoList, VideoPublic, VideoRemix
from service.storage import ASSETS, asset_key

log = logging.getLogger("spacetime.service")
router = APIRouter(prefix="/v1/videos", tags=["videos"])

TASK_NAME = "spacetime.generate_video"  # sent by name: the gateway never imports workers
WEBHOOK_TASK_NAME, WEBHOOK_QUEUE = "spacetime.deliver_webhook", "webhooks"
FINAL = ("completed", "failed")


Body = TypeVar("Body", VideoCreate, VideoRemix)
NUMERIC_FIELDS = ("seed", "num_inference_steps", "guidance_scale", "fps", "strength")


async def read_body(request: Request, schema: type[Body]) -> Body:
    """JSON, or the multipart / urlencoded form the openai SDK sends (every value a string)."""
    content_type = request.headers.get("content-type", "")
    raw: dict[str, Any]
    if content_type.startswith("application/json"):
        try:
            raw = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: deeply nested JSON
            raise ApiError(400, "The body is not valid JSON.", code="invalid_json")
        if not isinstance(raw, dict):
            raise ApiError(400, "The JSON body must be an object.", code="invalid_json")
    elif content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        raw = {}
        for name, value in form.multi_items():
            if not isinstance(value, str):
                raise ApiError(400, f"File uploads are not supported (field '{name}').", code="unsupported_parameter", param=name)
            raw[name] = value
        for name in NUMERIC_FIELDS:  # an empty form field means "not given"
            if raw.get(name) == "":
                raw.pop(name)
    else:
        raise ApiError(
            400, "Send the body as application/json or multipart/form-data.", code="unsupported_content_type"
        )
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def check_against_model(prompt: str, steps: int, quality: str, model: ServedModel, max_prompt_chars: int) -> None:
    """What a create and a remix both check: prompt length, steps and quality for this model."""
    if len(prompt) > max_prompt_chars:
        raise ApiError(400, f"The prompt is {len(prompt)} characters; the limit is {max_prompt_chars}.",
                       code="prompt_too_long", param="prompt")
    if quality not in model.qualities:
        listed = ", ".join(model.qualities)
        raise ApiError(400, f"Invalid quality {quality!r} for model '{model.name}'; allowed: {listed}.",
                       code="invalid_value", param="quality")
    if steps > model.max_steps:
        raise ApiError(400, f"num_inference_steps {steps} is above the limit of {model.max_steps} for "
                       f"model '{model.name}'.", code="invalid_value", param="num_inference_steps")


def resolve_spec(body: VideoCreate, model: ServedModel, max_prompt_chars: int) -> dict[str, Any]:
    """Check the request against what the model supports and fill in its defaults."""
    def bad(param: str, allowed: list[Any], given: Any) -> ApiError:
        listed = ", ".join(str(a) for a in allowed)
        return ApiError(400, f"Invalid {param} {given!r} for model '{model.name}'; allowed: {listed}.",
                        code="invalid_value", param=param)

    if body.input_reference is not None:
        raise ApiError(400, "input_reference is not supported by this server.", code="unsupported_parameter",
                       param="input_reference")
    size = body.size or model.default_size
    if size not in model.sizes:
        raise bad("size", model.sizes, size)
    seconds = body.seconds or model.default_seconds
    if seconds not in model.seconds:
        raise bad("seconds", model.seconds, seconds)
    if body.fps is not None and body.fps != model.fps:
        raise bad("fps", [model.fps], body.fps)
    steps = body.num_inference_steps or model.default_steps
    check_against_model(body.prompt, steps, body.quality, model, max_prompt_chars)
    return {
        "model": model.name, "prompt": body.prompt, "negative_prompt": body.negative_prompt,
        "seconds": seconds, "size": size, "fps": model.fps, "num_inference_steps": steps,
        "guidance_scale": body.guidance_scale if body.guidance_scale is not None else model.default_guidance,
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "quality": body.quality, "webhook_url": body.webhook_url,
    }


def remix_spec(body: VideoRemix, source: dict[str, str], model: ServedModel, max_prompt_chars: int) -> dict[str, Any]:
    """A remix of `source` (a completed job record): its model, size, seconds and fps; the
    request's prompt; the rest from the request, else the source's (the seed is drawn anew)."""
    steps = body.num_inference_steps or int(source["num_inference_steps"])
    quality = body.quality or source.get("quality") or "exact"
    check_against_model(body.prompt, steps, quality, model, max_prompt_chars)
    return {
        "model": model.name, "prompt": body.prompt,
        "negative_prompt": source.get("negative_prompt", "") if body.negative_prompt is None else body.negative_prompt,
        "seconds": source["seconds"], "size": source["size"], "fps": source["fps"], "num_inference_steps": steps,
        "guidance_scale": body.guidance_scale if body.guidance_scale is not None else float(source["guidance_scale"]),
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "quality": quality, "webhook_url": body.webhook_url,
        "remixed_from_video_id": source["id"],
        "strength": body.strength if body.strength is not None else model.remix_strength,
    }


def _with_poll_hint(response: Response, video: VideoPublic, poll_after_ms: int) -> VideoPublic:
    if video.status not in FINAL:
        response.headers["openai-poll-after-ms"] = str(poll_after_ms)
    return video


# The body is read by hand (JSON, or the multipart form the openai SDK sends), so FastAPI cannot
# infer it: describe it in the OpenAPI schema for clients and fuzzers.
def _body_openapi(schema: type[Body]) -> dict[str, Any]:
    body = schema.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": body}, "multipart/form-data": {"schema": body}}}}


CREATE_OPENAPI, REMIX_OPENAPI = _body_openapi(VideoCreate), _body_openapi(VideoRemix)


@router.post("", response_model=VideoPublic, response_model_exclude_none=False, openapi_extra=CREATE_OPENAPI)
async def create_video(
    request: Request, response: Response, principal: PrincipalDep, settings: SettingsDep, jobs: JobsDep,
    catalog: CatalogDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> VideoPublic:
    body = await read_body(request, VideoCreate)
    model = catalog.get(body.model or catalog.default.name)
    if model is None:
        raise ApiError(400, f"Unknown model {body.model!r}; served models: {', '.join(catalog.names())}.",
                       code="model_not_found", param="model")
    spec = resolve_spec(body, model, settings.max_prompt_chars)
    sent = fingerprint(body.model_dump(exclude_none=True))
    return await submit(request, response, principal.owner, settings, jobs, model, spec, sent, idempotency_key)


async def submit(
    request: Request, response: Response, owner: str, settings: Settings, jobs: JobStore, model: ServedModel,
    spec: dict[str, Any], sent: str, idempotency_key: str | None,
) -> VideoPublic:
    """Policy, webhook and rate checks, then record and queue the job (a create or a remix).
    `sent` fingerprints the request as sent, for Idempotency-Key replays."""
    request.app.state.check_prompt(spec)  # prompt policy: before anything is queued
    if spec["webhook_url"]:
        reason = await run_in_threadpool(webhooks.refusal, spec["webhook_url"], settings.webhook_allow_hosts)
        if reason:
            raise ApiError(400, reason, code="invalid_webhook_url", param="webhook_url")
    wait_s = await request.app.state.count_create(
        args=[owner, settings.create_limit_per_minute, 60, int(time.time())])
    if int(wait_s) > 0:
        raise ApiError(429, f"Create limit reached: {settings.create_limit_per_minute} videos per minute per key.",
                       code="rate_limit_exceeded", headers={"Retry-After": str(wait_s)})
    result = await jobs.create(owner, spec, max_active=settings.max_active_jobs,
                               idempotency_key=idempotency_key, idem_ttl_s=settings.idempotency_ttl_s,
                               request_fingerprint=sent)
    if result.outcome == "busy":
        raise ApiError(429, f"This key already has {result.active} videos queued or in progress (limit "
                       f"{settings.max_active_jobs}); wait for one to finish.", code="too_many_active_jobs",
                       headers={"Retry-After": "5"})
    if result.outcome == "existing":
        record = await jobs.get(result.job_id)
        if record is None:
            raise ApiError(409, "The video created with this Idempotency-Key was deleted.", code="idempotency_key_reused")
        if result.fingerprint != sent:
            raise ApiError(409, "This Idempotency-Key was already used with different parameters.",
                           code="idempotency_key_reused")
        response.headers["Idempotent-Replayed"] = "true"
        return _with_poll_hint(response, await jobs.public(record), settings.poll_after_ms)
    soft_s, hard_s = model.time_limits_s(settings.job_time_limit_s)
    try:
        await run_in_threadpool(request.app.state.celery.send_task, TASK_NAME, args=[result.job_id],
                                queue=model.queue, soft_time_limit=soft_s, time_limit=hard_s)
    except Exception as exc:  # broker down: the job can never run, say so on the record and to the caller
        log.error("could not queue job", extra={"job_id": result.job_id, "error": str(exc)})
        await jobs.mark_failed(result.job_id, "queue_unavailable", "The job could not be queued.")
        raise ApiError(503, "The job queue is unavailable; try again shortly.", code="queue_unavailable")
    log.info("video queued", extra={"job_id": result.job_id, "owner": owner, "model": model.name})
    record = await jobs.get(result.job_id)
    if record is None:  # deleted between create and now
        raise not_found(result.job_id)
    return _with_poll_hint(response, await jobs.public(record), settings.poll_after_ms)


@router.get("", response_model=VideoList)
async def list_videos(
    principal: PrincipalDep, jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> VideoList:
    if after is not None and await jobs.get(after, principal.owner) is None:
        raise ApiError(400, f"No video with id '{after}' to list after.", code="invalid_value", param="after")
    records, has_more = await jobs.list(principal.owner, limit=limit, after=after, order=order)
    data = [await jobs.public(r) for r in records]
    return VideoList(data=data, has_more=has_more,
                     first_id=data[0].id if data else None, last_id=data[-1].id if data else None)


@router.get("/{video_id}", response_model=VideoPublic)
async def retrieve_video(video_id: str, request: Request) -> Response:
    # The hot path of every polling client: auth, rate limit and the record in one Redis round
    # trip, serialised once (a returned Response skips FastAPI's second validation), and no
    # dependency resolution (app state read directly).
    settings: Settings = request.app.state.settings
    owner, retry_s, video = await request.app.state.jobs.poll(video_id, auth_args(request, settings))
    check_authorized(owner, retry_s, settings)
    if video is None:
        raise not_found(video_id)
    headers = {"openai-poll-after-ms": str(settings.poll_after_ms)} if video.status not in FINAL else None
    return Response(video.model_dump_json(), media_type="application/json", headers=headers)


@router.delete("/{video_id}", response_model=VideoDeleted)
async def delete_video(video_id: str, principal: PrincipalDep, jobs: JobsDep, storage: StorageDep) -> VideoDeleted:
    if await jobs.get(video_id, principal.owner) is None or not await jobs.delete(video_id):
        raise not_found(video_id)
    await run_in_threadpool(storage.delete_job, video_id)
    log.info("video deleted", extra={"job_id": video_id})
    return VideoDeleted(id=video_id)


@router.post("/{video_id}/cancel", response_model=VideoPublic)
async def cancel_video(video_id: str, request: Request, principal: PrincipalDep, jobs: JobsDep) -> VideoPublic:
    if await jobs.get(video_id, principal.owner) is None:
        raise not_found(video_id)
    outcome = await jobs.cancel(video_id)
    if outcome == "missing":
        raise not_found(video_id)
    if outcome in FINAL:
        raise ApiError(409, f"The video is already {outcome}; only queued or in-progress videos can be cancelled.",
                       code="video_not_cancellable")
    log.info("video cancel " + outcome, extra={"job_id": video_id})
    record = await jobs.get(video_id)
    if record is None:
        raise not_found(video_id)
    if outcome == "cancelled" and record.get("webhook_url"):
        # A queued job ends here, not in a worker, so the failure webhook is queued from here.
        await run_in_threadpool(request.app.state.celery.send_task, WEBHOOK_TASK_NAME,
                                args=[video_id, "video.failed"], queue=WEBHOOK_QUEUE)
    return await jobs.public(record)


async def completed_record(jobs: JobStore, video_id: str, owner: str, what: str) -> dict[str, str]:
    """The owner's job record, which must be completed: 404 if it is not theirs, 409 if not done."""
    record = await jobs.get(video_id, owner)
    if record is None:
        raise not_found(video_id)
    if record["status"] != "completed":
        raise ApiError(409, f"The video is {record['status']}; {what} once it is completed.", code="video_not_ready")
    return record


@router.post("/{video_id}/remix", response_model=VideoPublic, openapi_extra=REMIX_OPENAPI)
async def remix_video(
    video_id: str, request: Request, response: Response, principal: PrincipalDep, settings: SettingsDep,
    jobs: JobsDep, catalog: CatalogDep, storage: StorageDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> VideoPublic:
    """A new video from a completed one and a new prompt (what the openai SDK's `videos.remix`
    sends): the worker encodes the source MP4 and re-runs the last `strength` of the schedule
    with the new prompt, so layout and motion carry over where the prompt does not change them."""
    body = await read_body(request, VideoRemix)
    source = await completed_record(jobs, video_id, principal.owner, "it can be remixed")
    if source.get("assets_expired") == "1" or await run_in_threadpool(storage.size, asset_key(video_id, "video")) is None:
        raise ApiError(410, f"The content of video '{video_id}' has expired and was deleted; it cannot be remixed.",
                       code="video_expired")
    model = catalog.get(source["model"])
    if model is None:
        raise ApiError(409, f"Model {source['model']!r} of video '{video_id}' is no longer served; it cannot be "
                       "remixed.", code="model_not_found")
    if not model.remix:
        raise ApiError(400, f"Model '{model.name}' cannot remix videos.", code="remix_not_supported")
    spec = remix_spec(body, source, model, settings.max_prompt_chars)
    sent = fingerprint({"remix_of": video_id, **body.model_dump(exclude_none=True)})
    return await submit(request, response, principal.owner, settings, jobs, model, spec, sent, idempotency_key)


@router.get("/{video_id}/content")
async def download_content(
    video_id: str, request: Request, principal: PrincipalDep, jobs: JobsDep, storage: StorageDep,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
) -> Response:
    record = await completed_record(jobs, video_id, principal.owner, "content is available")
    key = asset_key(video_id, variant)
    size = await run_in_threadpool(storage.size, key)
    if record.get("assets_expired") == "1" or size is None:
        raise ApiError(410, f"The content of video '{video_id}' has expired and was deleted.", code="video_expired")
    media_type = ASSETS[variant][1]
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    span = parse_range(request.headers.get("range"), size)
    if span is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = span, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(storage.read(key, start, end), status_code=status, media_type=media_type, headers=headers)


@router.get("/{video_id}/provenance")
async def video_provenance(video_id: str, principal: PrincipalDep, jobs: JobsDep, storage: StorageDep) -> Response:
    """The C2PA verification record of the MP4 (`spacetime verify`'s JSON), made when it was signed."""
    await completed_record(jobs, video_id, principal.owner, "provenance exists")
    key = asset_key(video_id, "provenance")
    size = await run_in_threadpool(storage.size, key)
    if size is None:
        raise ApiError(404, f"Video '{video_id}' has no provenance record.", code="provenance_not_found")
    body = b"".join(await run_in_threadpool(lambda: list(storage.read(key, 0, size - 1))))
    return Response(body, media_type="application/json")


@router.get("/{video_id}/events")
async def video_events(video_id: str, principal: PrincipalDep, jobs: JobsDep, redis: RedisDep) -> StreamingResponse:
    """Server-sent events: `queued` (with queue_position), `in_progress`, `progress`, then
    `completed` or `failed`; each event's data is the video object."""
    if await jobs.get(video_id, principal.owner) is None:
        raise not_found(video_id)

    async def stream() -> AsyncIterator[str]:
        pubsub = redis.pubsub()
        await pubsub.subscribe(events_channel(video_id))  # before the first read, so nothing is missed
        try:
            last, last_sent = "", time.monotonic()
            while True:
                record = await jobs.get(video_id)
                if record is None:
                    yield f"event: failed\ndata: {json.dumps({'id': video_id, 'status': 'failed', 'error': {'code': 'deleted', 'message': 'The video was deleted.'}})}\n\n"
                    return
                video = await jobs.public(record)
                payload = video.model_dump_json()
                if payload != last:
                    name = video.status
                    if name == "in_progress" and last and json.loads(last).get("status") == "in_progress":
                        name = "progress"
                    yield f"event: {name}\ndata: {payload}\n\n"
                    last, last_sent = payload, time.monotonic()
                elif time.monotonic() - last_sent > 15:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                if video.status in FINAL:
                    return
                # Wake on any change to this job, or each second to refresh the queue position.
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
