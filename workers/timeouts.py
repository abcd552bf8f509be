"""The hard time limit: a job whose pool process Celery killed fails as `timeout`, once.

`generate_video` names `JobRequest` as its Celery request class (by its dotted name, so this
module may import workers.tasks). Celery calls `Request.on_timeout` in the worker's main process,
which outlives the killed pool process.
"""

from __future__ import annotations

import logging
import socket

import redis
from celery.worker import state as worker_state
from celery.worker.request import Request

from service.config import get_settings
from service.jobs import WorkerJobs
from workers.tasks import notify_jobs

log = logging.getLogger("spacetime.worker")

_main_redis: redis.Redis | None = None  # the worker's main process's own client (never forked into use)


class JobRequest(Request):
    """generate_video's Celery request. Its `on_timeout` runs in the worker's MAIN process.

    The soft limit raises SoftTimeLimitExceeded inside the task, which fails the job as `timeout`.
    When that exception never lands (a native call that does not return to Python, a frozen
    process), the hard limit kills the pool process, and the job would stay in_progress until the
    heartbeat reaper requeued it to run again (each run another full limit of GPU time). Here the
    main process fails it as `timeout` instead, under the killed process's worker id, in one
    atomic script (FAIL_KILLED): only while that process still holds the job in_progress, or the
    reaper requeued it from that process and nobody claimed it since (a process frozen with the
    GIL held stops heartbeating before the hard limit). A job finished, cancelled, deleted or taken
    over by another worker is left alone. Failing clears `st:running`, so the reaper skips it."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or worker_state.should_terminate or self.worker_pid is None or not self.args:
            return  # soft: the task handles it; cold shutdown: the job is requeued, not failed
        job_id = str(self.args[0])
        soft_s = self.time_limits[1] or get_settings().job_time_limit_s
        message = (f"Generation took longer than the {soft_s:g} s limit and did not stop; "
                   f"it was killed at the {timeout:g} s hard limit.")
        try:
            outcome = fail_after_hard_limit(job_id, f"{socket.gethostname()}:{self.worker_pid}", message)
        except redis.RedisError as exc:  # the reaper requeues it later, as before this hook
            log.error("hard time limit: job not failed: %s", exc, extra={"job_id": job_id})
            return
        log.error("hard time limit: generation killed", extra={"job_id": job_id, "outcome": outcome,
                                                               "limit_s": timeout})


def fail_after_hard_limit(job_id: str, pool_worker_id: str, message: str) -> str:
    """Fail the job as `timeout` on behalf of the killed pool process `pool_worker_id`; returns
    FAIL_KILLED's outcome ('ok' when failed here). Then queue its webhook, as a finished job does."""
    global _main_redis
    if _main_redis is None:
        _main_redis = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
    jobs = WorkerJobs(_main_redis, pool_worker_id)
    outcome = jobs.fail_killed(job_id, "timeout", message)
    if outcome == "ok":
        notify_jobs(jobs, job_id)
    return outcome
