"""`spacetime worker`: a Celery worker for one or more models, against any Redis URL.

    spacetime worker --models spacetime-tiny --redis-url redis://127.0.0.1:6379/0 --concurrency 1

It consumes each model's queue (`video.<model>`) and the webhook queue. Each pool process
loads the models' pipelines once and keeps them resident.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="spacetime-tiny", help="comma-separated served models (default: spacetime-tiny)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: SPACETIME_REDIS_URL)")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes; one per GPU (default: 1)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: SPACETIME_DEVICE or cpu)")
    parser.add_argument("--name", default=None, help="worker node name (default: <models>@<host>-<pid>)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--quiet", action="store_true", help="no Celery start-up banner")


def run(args: argparse.Namespace) -> int:
    # Settings are read when the Celery app is imported, so the environment is set first.
    if args.redis_url:
        os.environ["SPACETIME_REDIS_URL"] = args.redis_url
    if args.device:
        os.environ["SPACETIME_DEVICE"] = args.device
    os.environ["SPACETIME_WORKER_MODELS"] = args.models
    from service.catalog import Catalog
    from service.config import get_settings

    try:
        settings = get_settings()
        catalog = Catalog.load(settings.models_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if catalog.get(m) is None]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; served: {', '.join(catalog.names())}", file=sys.stderr)
        return 2
    from workers.celery_app import WEBHOOK_QUEUE, app

    queues = list(dict.fromkeys(catalog.models[m].queue for m in names)) + [WEBHOOK_QUEUE]
    name = args.name or f"{'+'.join(names)}@{socket.gethostname()}-{os.getpid()}"
    app.worker_main([
        *(["--quiet"] if args.quiet else []), "worker", "--queues", ",".join(queues), "--concurrency", str(args.concurrency), "--pool", "prefork",
        "--hostname", name, "--loglevel", args.loglevel,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])
    return 0
