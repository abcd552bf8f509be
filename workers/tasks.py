"""The worker's tasks: `generate_video(job_id)` and `deliver_webhook(job_id, event)`.

`generate_video` is idempotent: it takes a job id, claims the job atomically (a finished,
cancelled or already-running job is left alone), writes its outputs under keys derived from
the job id only, and finishes the job with one atomic transition. A redelivered job therefore
overwrites its own files at worst and never leaves a second video under another name.

Keeping the device busy: with `max_batch` > 1 a task also claims queued jobs of the same model
and clip shape and denoises them in one batched call (their own messages then find them held or
done), and with `overlap_encode` (default) each job's encode, signing and storing run on the
process's background thread (workers/overlap.py) while the next task denoises.

The pipeline loads once per worker process (in `worker_process_init`) and stays resident.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import numpy as np
import redis
from celery import signals
from celery.exceptions import SoftTimeLimitExceeded

from service import metrics, webhooks
from service.catalog import Catalog, ServedModel, time_limits_s
from service.config import Settings, get_settings
from service.jobs import WorkerJobs, to_public
from service.logs import configure_logging
from service.safety import PolicyViolation, enforce_policy, policy_error
from service.storage import ASSETS, Storage, asset_key, open_storage
from workers import media
from workers.celery_app import GENERATE_TASK, WEBHOOK_QUEUE, WEBHOOK_TASK, app
from workers.overlap import BackgroundStage

log = logging.getLogger("spacetime.worker")
MODELS_ENV = "SPACETIME_WORKER_MODELS"  # comma-separated models this worker serves (set by `spacetime worker`)


# ----------------------------------------------------------------------------- the model seam

def load_model(source: str, device: str) -> Any:
    """The one place the worker loads a pipeline (see docs/contracts.md)."""
    from model.pipeline import load_pipeline  # torch is imported here, in the worker process only
    from workers.multigpu import rank_group_from_env

    return rank_group_from_env(source, device) or load_pipeline(source, device=device)  # --gpus N: N ranks


def cpu_threads(configured: int, cores: int, processes: int) -> int:
    """Torch intra-op threads for one CPU worker process: SPACETIME_CPU_THREADS when set, else the
    cores shared out among the pool processes (at least 1). More threads than a process's share
    spin against each other: on the 2-core dev VM under outside load, 2 threads made a tiny-model
    denoise about 15x slower than 1 (docs/performance.md)."""
    return configured if configured > 0 else max(1, cores // max(1, processes))


def set_cpu_threads(settings: Settings) -> int | None:
    """Apply cpu_threads in this process when it runs on the CPU; returns the number set."""
    if not settings.device.startswith("cpu"):
        return None
    import torch

    from workers.worker import PROCESSES_ENV

    threads = cpu_threads(settings.cpu_threads, len(os.sched_getaffinity(0)), int(os.environ.get(PROCESSES_ENV, "1")))
    torch.set_num_threads(threads)
    return threads


def clip_options(job: dict[str, str], model: ServedModel) -> dict[str, Any]:
    """The pipeline options a job's clip shape sets (equal for every job of a batch: BATCH_FIELDS)."""
    width_px, height_px = model.parse_size(job["size"])
    # Only a fast job passes mode: a pipeline without fast mode then refuses it clearly (ValueError).
    extra = {"mode": "fast"} if job.get("quality") == "fast" else {}
    return dict(num_frames=model.num_frames(job["seconds"]), height=height_px, width=width_px, fps=int(job["fps"]),
                num_inference_steps=int(job["num_inference_steps"]), guidance_scale=float(job["guidance_scale"]),
                **extra)


def sample_frames(pipe: Any, job: dict[str, str], model: ServedModel, callback: Callable[[int, int], bool],
                  source: np.ndarray | None = None) -> np.ndarray:
    """The one place the worker calls a pipeline for one job: job record -> uint8 frames (T, H, W, 3).
    `source`: a remix's source frames (remix_source)."""
    remix = {} if source is None else {"init_video": source, "strength": float(job["strength"])}
    return pipe(prompt=job["prompt"], negative_prompt=job.get("negative_prompt", ""), seed=int(job["seed"]),
                callback=callback, **clip_options(job, model), **remix)


class RemixUnavailable(RuntimeError):
    """A remix cannot run: its source video is gone, or this worker's pipeline cannot remix."""


def remix_source(storage: Any, pipe: Any, job: dict[str, str]) -> np.ndarray | None:
    """The frames a remix starts from (its source's stored MP4, decoded), or None for a plain job."""
    source_id = job.get("remixed_from_video_id")
    if not source_id:
        return None
    if not getattr(pipe, "supports_remix", False):
        raise RemixUnavailable(f"This worker's pipeline for model {job.get('model')!r} cannot remix videos.")
    workspace = storage.workspace()
    try:
        path = fetch_video(storage, source_id, workspace / "source.mp4")
        if path is None:
            raise RemixUnavailable(f"The source video '{source_id}' was deleted or expired before the remix ran.")
        frames, _ = media.decode_mp4(path)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return frames


def fetch_video(storage: Any, video_id: str, dest: Path) -> Path | None:
    """Copy a stored video's MP4 to `dest`; None when it is gone (deleted or expired)."""
    key = asset_key(video_id, "video")
    size = storage.size(key)
    if size is None:
        return None
    with open(dest, "wb") as f:
        for chunk in storage.read(key, 0, size - 1):
            f.write(chunk)
    return dest


def sample_batch(pipe: Any, jobs: list[dict[str, str]], model: ServedModel,
                 callback: Callable[[int, int], bool], source: np.ndarray | None = None) -> list[np.ndarray]:
    """Jobs of one clip shape in one batched pipeline call (`supports_batch` pipelines) -> their
    frames, in order; each job's clip is the one its seed gives alone, to float tolerance.
    A remix (`source` frames) runs alone."""
    if len(jobs) == 1:
        return [sample_frames(pipe, jobs[0], model, callback, source)]
    frames = pipe(prompt=[j["prompt"] for j in jobs], negative_prompt=[j.get("negative_prompt", "") for j in jobs],
                  seed=[int(j["seed"]) for j in jobs], callback=callback, **clip_options(jobs[0], model))
    return list(frames)  # (B, T, H, W, 3) -> B clips


class SigningFailed(RuntimeError):
    """The video could not be signed; it is not stored (see workers/provenance.py)."""


def is_cancellation(exc: BaseException) -> bool:
    from model.pipeline import GenerationCancelled

    return isinstance(exc, GenerationCancelled)


# ----------------------------------------------------------------------------- after sampling

def check_output(frames: np.ndarray, device: str) -> tuple[str, str] | None:
    """The output check (workers/output_check.py; off unless SPACETIME_OUTPUT_CHECK_MODEL is set).
    Returns (error code, reason) to withhold the video, or None."""
    from workers.output_check import ERROR_CODE, get_output_check

    check = get_output_check(device=device)
    if check is None:
        return None
    verdict = check.check(frames)
    return None if verdict.allowed else (ERROR_CODE, verdict.reason)


def write_signed_video(frames: np.ndarray, dest: Path, job_id: str, job: dict[str, str], pipe: Any,
                       parent: Path | None = None) -> dict[str, Any]:
    """The MP4 with a signed C2PA manifest (workers/provenance.py) and its verification record.
    `parent`: a remix's source MP4, named in the manifest as the ingredient it was made from."""
    from workers import provenance

    settings = provenance.ProvenanceSettings.from_settings()
    info = provenance.generation_info(job, str(getattr(pipe, "weights_hash", "")), len(frames), video_id=job_id)
    try:
        provenance.write_signed_mp4(frames, dest, int(job["fps"]), info, settings, parent)
    except provenance.SigningError as exc:
        raise SigningFailed(str(exc)) from exc
    return provenance.provenance_record(dest, settings)


# ----------------------------------------------------------------------------- per-process state

@dataclass
class WorkerContext:
    settings: Settings
    catalog: Catalog
    redis: redis.Redis
    jobs: WorkerJobs
    storage: Storage
    models: list[str]
    pipelines: dict[str, Any] = field(default_factory=dict)

    def pipeline(self, model: ServedModel) -> Any:
        """Loaded once per process and source (models sharing weights share the pipeline)."""
        if model.source not in self.pipelines:
            started = time.perf_counter()
            pipe = self.pipelines[model.source] = load_model(model.source, self.settings.device)
            if self.settings.compile_model and hasattr(pipe, "compile_transformer"):
                pipe.compile_transformer()  # compiles lazily, at the first job of each clip shape
            if hasattr(pipe, "fast_sampling"):
                pipe.fast_sampling = replace(pipe.fast_sampling, fp8=self.settings.fast_fp8,
                                             forecast_gap=self.settings.fast_forecast_gap)
            log.info("pipeline loaded", extra={"model": model.name, "source": model.source,
                                               "load_s": round(time.perf_counter() - started, 2),
                                               "random_weights": getattr(pipe, "is_random_weights", None)})
        return self.pipelines[model.source]


_context: WorkerContext | None = None
_stage: BackgroundStage | None = None


def background_stage() -> BackgroundStage:
    """This process's encode-overlap thread (workers/overlap.py)."""
    global _stage
    if _stage is None:
        _stage = BackgroundStage()
    return _stage


def context() -> WorkerContext:
    global _context
    if _context is None:
        settings = get_settings()
        catalog = Catalog.load(settings.models_file)
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        named = [m for m in os.environ.get(MODELS_ENV, catalog.default.name).split(",") if m]
        # Every model routed to a queue this worker consumes is one it serves (and heartbeats for).
        queues = {catalog.models[m].queue for m in named if m in catalog.models}
        models = [m.name for m in catalog.models.values() if m.queue in queues]
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        _context = WorkerContext(settings, catalog, client, WorkerJobs(client, worker_id), open_storage(settings), models)
    return _context


def heartbeat_loop(ctx: WorkerContext, stop: threading.Event) -> None:
    """Say this process is alive; requeue jobs whose worker stopped saying so; end this process
    when its background stage hangs past its jobs' hard limit (`stop_overdue_stage`).

    After Redis was unreachable, wait one heartbeat TTL before reaping: the outage may have
    outlived every worker's heartbeat key although the workers live, and they need a period to
    heartbeat again (without this, a Redis restart longer than the TTL re-runs running jobs)."""
    reap_after = 0.0  # monotonic time; inf while Redis is unreachable
    while not stop.is_set():
        try:
            overdue = background_stage().overdue()
            if overdue:
                stop_overdue_stage(ctx, overdue)
            ctx.jobs.heartbeat(ctx.models, ctx.settings.heartbeat_ttl_s)
            if reap_after == float("inf"):
                reap_after = time.monotonic() + ctx.settings.heartbeat_ttl_s
            if time.monotonic() < reap_after:
                stop.wait(ctx.settings.heartbeat_s)
                continue
            for job_id, dead in ctx.jobs.orphans():
                job = ctx.jobs.get(job_id)
                if job and ctx.jobs.requeue(job_id, dead):
                    model = ctx.catalog.get(job["model"])
                    # The model's own limits, as the gateway sent them (else the rerun gets the defaults).
                    soft_s, hard_s = time_limits_s(model.time_limit_s if model else None,
                                                   ctx.settings.job_time_limit_s)
                    app.send_task(GENERATE_TASK, args=[job_id], queue=model.queue if model else None,
                                  soft_time_limit=soft_s, time_limit=hard_s)
                    log.warning("requeued a job whose worker died", extra={"job_id": job_id, "dead_worker": dead})
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)
            reap_after = float("inf")
        stop.wait(ctx.settings.heartbeat_s)


@signals.worker_process_init.connect
def _start_process(**_: Any) -> None:
    """In each pool process: JSON logs, load this worker's pipelines, then start heartbeating."""
    configure_logging(get_settings().log_level)
    ctx = context()
    threads = set_cpu_threads(ctx.settings)
    if threads is not None:
        log.info("cpu threads set", extra={"threads": threads})
    for name in ctx.models:
        model = ctx.catalog.get(name)
        if model is not None:
            ctx.pipeline(model)
    from workers.output_check import get_output_check

    get_output_check(device=ctx.settings.device)  # a misconfigured output check fails here, at start
    stop = threading.Event()
    threading.Thread(target=heartbeat_loop, args=(ctx, stop), name="heartbeat", daemon=True).start()

    @signals.worker_process_shutdown.connect(weak=False)
    def _stop_process(**_: Any) -> None:
        # A clean stop finishes the video still encoding in the background, heartbeating meanwhile
        # (else another worker's reaper would requeue it and it would run twice).
        if not background_stage().drain(timeout_s=ctx.settings.job_time_limit_s):
            log.error("shutdown: a background encode did not finish; its job is requeued by the reaper")
        stop.set()
        ctx.jobs.stop_heartbeat()


# ----------------------------------------------------------------------------- tasks

@dataclass
class Run:
    """One job of the batch a task runs (a batch of one unless max_batch > 1)."""

    job_id: str
    job: dict[str, str]
    superseded: threading.Event = field(default_factory=threading.Event)  # another worker took the job over
    stopped: bool = False  # its step callback said stop: cancelled, deleted or superseded
    frames: np.ndarray | None = None


@app.task(name=GENERATE_TASK, acks_late=True, reject_on_worker_lost=True,
          Request="workers.timeouts:JobRequest")  # fails the job at the hard limit
def generate_video(job_id: str) -> str:
    """Claim the job (and, with max_batch > 1, queued look-alikes), denoise, then finish each job:
    on this process's background thread when overlap_encode is on (the task returns at once and
    the next job denoises meanwhile), else here."""
    ctx = context()
    extra = {"job_id": job_id}
    outcome, info = ctx.jobs.claim(job_id, ctx.settings.max_attempts)
    if outcome != "claimed":
        log.info(f"job not run: {outcome}", extra={**extra, "detail": info})
        if outcome in ("cancelled", "exhausted"):
            notify(ctx, job_id)
        return outcome
    job = ctx.jobs.get(job_id) or {}
    model = ctx.catalog.get(job.get("model", ""))
    if model is None:
        ctx.jobs.fail(job_id, "model_not_served", f"This worker does not serve model {job.get('model')!r}.")
        notify(ctx, job_id)
        return "failed"
    started = time.perf_counter()
    runs = [Run(job_id, job)]
    try:
        pipe = ctx.pipeline(model)
        source = remix_source(ctx.storage, pipe, job)
        runs += claim_batch(ctx, pipe, job_id, job)
        log.info("generation started", extra={**extra, "attempt": info, "model": model.name,
                                              "batch": [r.job_id for r in runs[1:]]})
        # The gateway checked the prompts before queueing; the policy file may have changed since.
        runs = [r for r in runs if allowed_by_policy(ctx, r)]
        if not runs:
            return "failed"
        callback = batch_callback(ctx, runs, model.name)
        for run, frames in zip(runs, sample_batch(pipe, [r.job for r in runs], model, callback, source)):
            run.frames = frames
    except RemixUnavailable as exc:
        fail_runs(ctx, runs, "remix_unavailable", str(exc))
        return "failed"
    except SoftTimeLimitExceeded:
        fail_runs(ctx, runs, "timeout", over_limit(ctx, model))
        return "failed"
    except Exception as exc:
        if not is_cancellation(exc):
            log.exception("generation failed", extra=extra)
            fail_runs(ctx, runs, "generation_failed", f"{type(exc).__name__}: {exc}")
            return "failed"
        for run in runs:
            run.stopped = True  # every job of the batch said stop
    for run in [r for r in runs if r.stopped]:
        settle_stopped(ctx, run)
    runs = [r for r in runs if not r.stopped]
    if not runs:
        return "cancelled"

    def finish() -> list[str]:
        outcomes = []
        for run in runs:  # one job's unexpected error must not leave the others of its batch unfinished
            try:
                outcomes.append(finish_job(ctx, model, pipe, run, started))
            except Exception:
                log.exception("finishing the job failed", extra={"job_id": run.job_id})
                outcomes.append("error")
        return outcomes

    if not ctx.settings.overlap_encode:
        return finish()[0]
    try:
        # Waits while the previous job still finishes. The stage gets the task's hard limit.
        _, hard_s = model.time_limits_s(ctx.settings.job_time_limit_s)
        background_stage().submit(finish, [r.job_id for r in runs], hard_s)
    except SoftTimeLimitExceeded:
        fail_runs(ctx, runs, "timeout", over_limit(ctx, model))
        return "failed"
    return "finishing"


def over_limit(ctx: WorkerContext, model: ServedModel) -> str:
    return f"Generation took longer than the {model.time_limits_s(ctx.settings.job_time_limit_s)[0]} s limit."


def stop_overdue_stage(ctx: WorkerContext, job_ids: Sequence[str]) -> None:
    """The background stage ran past its jobs' hard limit (a hung encode or upload). A thread
    cannot be stopped, so do what the hard limit does to a task: fail the jobs as `timeout` (only
    while this process holds them) and end the process; Celery starts a new one, and a task it was
    running is redelivered (reject_on_worker_lost) or requeued by the reaper."""
    for job_id in job_ids:
        outcome = ctx.jobs.fail(job_id, "timeout", "The video's encoding and storing did not finish within "
                                                   "the job's hard time limit; it was stopped.")
        if outcome == "ok":
            notify(ctx, job_id)
    log.error("background stage overran its hard limit; ending this process", extra={"job_ids": list(job_ids)})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def claim_batch(ctx: WorkerContext, pipe: Any, job_id: str, job: dict[str, str]) -> list[Run]:
    """Up to max_batch - 1 queued jobs of the same model and clip shape, claimed to run with `job`.
    Exact mode only: the fast mode's step cache decides for a whole batch, so a fast clip in a
    batch would differ from the clip its seed gives alone. A remix runs alone (its own source)."""
    if (ctx.settings.max_batch < 2 or not getattr(pipe, "supports_batch", False) or job.get("quality") == "fast"
            or job.get("remixed_from_video_id")):
        return []
    ids = ctx.jobs.claim_alike(job_id, ctx.settings.max_batch - 1, ctx.settings.max_attempts)
    return [Run(i, record) for i in ids if (record := ctx.jobs.get(i))]


def allowed_by_policy(ctx: WorkerContext, run: Run) -> bool:
    """Re-check the prompt; a rejected job fails here (logged by the prompt's hash, never its text)."""
    try:
        enforce_policy(run.job.get("prompt", ""), run.job.get("negative_prompt"))
        return True
    except PolicyViolation as exc:
        log.info("prompt rejected by policy", extra={"job_id": run.job_id, "prompt_sha256": exc.decision.prompt_sha256,
                                                     "category": exc.decision.category})
        ctx.jobs.fail(run.job_id, exc.code, policy_error(exc.decision)["error"]["message"])
        notify(ctx, run.job_id)
        return False


def fail_runs(ctx: WorkerContext, runs: list[Run], code: str, message: str) -> None:
    for run in runs:
        through_redis_outage(lambda: ctx.jobs.fail(run.job_id, code, message), run.job_id)  # noqa: B023 (called at once)
        notify(ctx, run.job_id)


def settle_stopped(ctx: WorkerContext, run: Run) -> None:
    """A job whose step callback said stop: taken over by another worker (left alone), else
    cancelled or deleted (failed as cancelled; a deleted one has no record left to fail)."""
    if run.superseded.is_set():
        log.warning("job taken over by another worker; stopping this run", extra={"job_id": run.job_id})
        return
    ctx.jobs.fail(run.job_id, "cancelled", "The video was cancelled.")
    log.info("generation cancelled", extra={"job_id": run.job_id})
    notify(ctx, run.job_id)


def finish_job(ctx: WorkerContext, model: ServedModel, pipe: Any, run: Run, started: float) -> str:
    """The post-denoise stage of one job: output check, signed MP4 and stills stored, the job
    completed (only now, with its files in place), webhook. Returns the job's outcome."""
    job_id, extra = run.job_id, {"job_id": run.job_id}
    frames, run.frames = run.frames, None  # the stage holds the only reference: freed when it returns
    try:
        try:
            gone = ctx.jobs.report_progress(job_id, 96) == 0  # cancelled or deleted since the last step
        except REDIS_DOWN:
            gone = False  # Redis restarting: encode anyway, the final state write waits for it
        if gone:  # skip the encode
            ctx.jobs.fail(job_id, "cancelled", "The video was cancelled.")
            notify(ctx, job_id)
            return "failed"
        blocked = check_output(frames, ctx.settings.device)
        if blocked is not None:
            ctx.jobs.fail(job_id, *blocked)
            notify(ctx, job_id)
            return "failed"
        assets = store_outputs(ctx, job_id, run.job, frames, pipe)
    except SigningFailed as exc:
        ctx.jobs.fail(job_id, "signing_failed", str(exc))
        notify(ctx, job_id)
        return "failed"
    except SoftTimeLimitExceeded:  # only when the stage runs inside the task (overlap off)
        ctx.jobs.fail(job_id, "timeout", over_limit(ctx, model))
        notify(ctx, job_id)
        return "failed"
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # say so, without server paths
            log.error("output storage full", extra=extra)
            through_redis_outage(lambda: ctx.jobs.fail(job_id, "storage_full", "The video could not be stored: "
                                                       "no space left on the output storage. Try again later."), job_id)
        else:
            log.exception("generation failed", extra=extra)
            message = f"{type(exc).__name__}: {exc}"  # bound now: the retried lambda must not close over exc
            through_redis_outage(lambda: ctx.jobs.fail(job_id, "generation_failed", message), job_id)
        notify(ctx, job_id)
        return "failed"
    expires_at = int(time.time()) + ctx.settings.output_ttl_s
    finished = through_redis_outage(lambda: ctx.jobs.complete(job_id, expires_at, assets), job_id)
    if finished in ("superseded", "completed"):
        # Another worker holds (or finished) this job; it writes the same keys, so the files stay.
        log.warning("job finished elsewhere; this run's record update skipped", extra=extra)
        return "superseded"
    if finished != "ok":
        # Cancelled or deleted while the files were being written: nothing may point at them.
        ctx.storage.delete_job(job_id)
        log.info("job gone before completion; outputs removed", extra={**extra, "state": finished})
        notify(ctx, job_id)
        return "discarded"
    elapsed = time.perf_counter() - started
    metrics.observe(ctx.redis, "spacetime_generation_seconds", model.name, elapsed)
    log.info("generation completed", extra={**extra, "seconds": round(elapsed, 2)})
    notify(ctx, job_id)
    return "completed"


REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def through_redis_outage(call: Callable[[], str], job_id: str, patience_s: float = 300.0) -> str:
    """A job's final state write, retried while Redis restarts. Dropping it would leave the job
    in_progress for good: its worker is alive, so the heartbeat reaper never takes it back."""
    deadline, delay_s = time.monotonic() + patience_s, 0.2
    while True:
        try:
            return call()
        except REDIS_DOWN as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("redis unavailable; retrying the final state: %s", exc, extra={"job_id": job_id})
            time.sleep(delay_s)
            delay_s = min(2 * delay_s, 5.0)


def progress_callback(ctx: WorkerContext, job_id: str, model_name: str,
                      superseded: threading.Event, observe: bool = True) -> Callable[[int, int], bool]:
    """Per denoising step: record progress (0-95, the rest is encoding) and (with `observe`) step
    latency; returning False makes the pipeline raise GenerationCancelled within this step."""
    last = [time.perf_counter()]

    def callback(step: int, total: int) -> bool:
        now = time.perf_counter()
        try:
            if observe:
                metrics.observe(ctx.redis, "spacetime_denoise_step_seconds", model_name, now - last[0])
            last[0] = now
            state = ctx.jobs.report_progress(job_id, int(95 * step / max(total, 1)))
        except REDIS_DOWN as exc:  # Redis restarting: keep denoising, report at the next step
            log.warning("progress not recorded: %s", exc, extra={"job_id": job_id})
            return True
        if state == 2:  # 0: cancelled or deleted; 2: another worker holds the job now
            superseded.set()
        return state == 1

    return callback


def batch_callback(ctx: WorkerContext, runs: list[Run], model_name: str) -> Callable[[int, int], bool]:
    """One step callback for a batch: each job's progress. A job cancelled, deleted or taken over
    is marked stopped (its clip is still computed, then dropped); the batch stops when all are."""
    callbacks = [progress_callback(ctx, r.job_id, model_name, r.superseded, observe=i == 0) for i, r in enumerate(runs)]

    def callback(step: int, total: int) -> bool:
        for run, one in zip(runs, callbacks):
            if not run.stopped and not one(step, total):
                run.stopped = True
        return not all(r.stopped for r in runs)

    return callback


def store_outputs(ctx: WorkerContext, job_id: str, job: dict[str, str], frames: np.ndarray, pipe: Any) -> dict[str, str]:
    """Signed MP4 + provenance record + thumbnail + spritesheet + metadata, written in a scratch
    folder, then moved to their deterministic keys."""
    from workers.provenance import ProvenanceSettings, apply_watermark

    if ProvenanceSettings.from_settings().watermark:
        frames = apply_watermark(frames)  # before every output, so the stills carry it too
    workspace = ctx.storage.workspace()
    try:
        meta = {
            "job_id": job_id, "model": job["model"], "prompt": job["prompt"],
            "negative_prompt": job.get("negative_prompt", ""), "seed": job["seed"], "size": job["size"],
            "seconds": job["seconds"], "fps": job["fps"], "num_frames": str(len(frames)),
            "num_inference_steps": job["num_inference_steps"], "guidance_scale": job["guidance_scale"],
            "quality": job.get("quality") or "exact",
            **({"remixed_from_video_id": job["remixed_from_video_id"], "strength": job["strength"]}
               if job.get("remixed_from_video_id") else {}),
            "weights_hash": str(getattr(pipe, "weights_hash", "")),
            "random_weights": str(getattr(pipe, "is_random_weights", "")),
        }
        parent = None
        if job.get("remixed_from_video_id"):  # the source as the manifest's parent, if it is still stored
            parent = fetch_video(ctx.storage, job["remixed_from_video_id"], workspace / "parent.mp4")
            if parent is None:
                log.warning("remix source gone before signing; signed without its ingredient", extra={"job_id": job_id})
        record = write_signed_video(frames, workspace / "video.mp4", job_id, job, pipe, parent)
        (workspace / "provenance.json").write_text(json.dumps(record, indent=2))
        media.write_thumbnail(frames, workspace / "thumbnail.webp")
        media.write_spritesheet(frames, workspace / "spritesheet.jpg")
        (workspace / "metadata.json").write_text(json.dumps(meta, indent=2))
        for variant in ("thumbnail", "spritesheet", "metadata", "provenance", "video"):  # the video last
            ctx.storage.put(asset_key(job_id, variant), workspace / ASSETS[variant][0])
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return {"num_frames": str(len(frames))}


def notify(ctx: WorkerContext, job_id: str) -> None:
    """Queue a webhook delivery when the job asked for one and has finished."""
    notify_jobs(ctx.jobs, job_id)


def notify_jobs(jobs: WorkerJobs, job_id: str) -> None:
    job = jobs.get(job_id)
    if job and job.get("webhook_url") and job.get("status") in ("completed", "failed"):
        app.send_task(WEBHOOK_TASK, args=[job_id, f"video.{job['status']}"], queue=WEBHOOK_QUEUE)


@app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self: Any, job_id: str, event_type: str) -> str:
    """POST the signed event; on failure retry with exponential backoff up to webhook_attempts."""
    ctx = context()
    job = ctx.jobs.get(job_id)
    if job is None or not job.get("webhook_url"):
        return "no job"
    data = to_public(job).model_dump(mode="json")
    headers, body = webhooks.build(ctx.settings.webhook_secret, f"msg_{job_id}_{event_type}", event_type, data)
    attempt = self.request.retries + 1
    extra = {"job_id": job_id, "event": event_type, "attempt": attempt}
    refused = webhooks.refusal(job["webhook_url"], ctx.settings.webhook_allow_hosts)  # DNS may have changed
    if refused:
        log.error(f"webhook refused: {refused}", extra=extra)
        return "refused"
    try:
        response = httpx.post(job["webhook_url"], content=body, headers=headers, timeout=ctx.settings.webhook_timeout_s)
        if response.status_code < 300:
            log.info("webhook delivered", extra=extra)
            return "delivered"
        problem = f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if attempt >= ctx.settings.webhook_attempts:
        log.error(f"webhook gave up: {problem}", extra=extra)
        return "gave up"
    delay_s = ctx.settings.webhook_backoff_s * 2 ** (attempt - 1)
    log.warning(f"webhook failed ({problem}); retry in {delay_s:.1f} s", extra=extra)
    raise self.retry(countdown=delay_s)
