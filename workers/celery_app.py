"""The Celery app: Redis broker, one queue per model, settings for long, costly tasks.

Late acks + prefetch 1: a worker takes one video at a time and the message stays unacked
until the video is stored, so a worker that dies mid-job does not lose it. reject_on_worker_lost
requeues the job when a pool process is killed; when the whole worker dies, the other workers'
reaper (workers/tasks.py) requeues it as soon as its heartbeat expires, and the broker's
visibility timeout is the backstop. The gateway sends tasks by name (`send_task`).
"""

from __future__ import annotations

from celery import Celery

from service.catalog import Catalog, time_limits_s
from service.config import Settings, get_settings

GENERATE_TASK = "spacetime.generate_video"
WEBHOOK_TASK = "spacetime.deliver_webhook"
WEBHOOK_QUEUE = "webhooks"


def create_celery(settings: Settings) -> Celery:
    catalog = Catalog.load(settings.models_file)
    app = Celery("spacetime", broker=settings.redis_url, include=["workers.tasks"])
    soft_s, hard_s = time_limits_s(None, settings.job_time_limit_s)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        # Defaults; the gateway sends each job with its model's limits (see create_video).
        task_soft_time_limit=soft_s,
        task_time_limit=hard_s,
        task_ignore_result=True,
        task_default_queue=catalog.default.queue,
        # Routing by name: the default model's queue for generation (the gateway names the
        # queue of the requested model), a queue of its own for webhook deliveries.
        task_routes={GENERATE_TASK: {"queue": catalog.default.queue}, WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE}},
        broker_transport_options={"visibility_timeout": max(
            [settings.job_time_limit_s] + [m.time_limit_s or 0 for m in catalog.models.values()]) + 60},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_proc_alive_timeout=300,  # loading a model in the pool process takes a while
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
    )
    return app


app = create_celery(get_settings())
