"""`spacetime worker`: a Celery worker for one or more models, against any Redis URL.

    spacetime worker --models spacetime-tiny --redis-url redis://127.0.0.1:6379/0 --concurrency 1

It consumes each model's queue (`video.<model>`) and the webhook queue. Each pool process
loads the models' pipelines once and keeps them resident. `--gpus N` (N > 1) splits every video
across N ranks, one GPU each (workers/multigpu.py, docs/model.md "Multi-GPU").
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

PROCESSES_ENV = "SPACETIME_WORKER_PROCESSES"  # pool processes of this worker (read by workers/tasks.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="spacetime-tiny", help="comma-separated served models (default: spacetime-tiny)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: SPACETIME_REDIS_URL)")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes; one per GPU (default: 1)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: SPACETIME_DEVICE or cpu)")
    parser.add_argument("--gpus", type=int, default=1,
                        help="ranks per video: N > 1 splits each video across GPUs 0..N-1 (workers/multigpu.py; "
                             "with --device cpu, N CPU processes over gloo); implies --concurrency 1")
    parser.add_argument("--no-cfg-parallel", action="store_true",
                        help="with --gpus N even: sequence-parallel only (default: guidance pass halves on their own ranks)")
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
    os.environ[PROCESSES_ENV] = str(args.concurrency)  # CPU workers split the cores among pool processes
    if args.gpus < 1:
        print(f"error: --gpus must be at least 1, got {args.gpus}", file=sys.stderr)
        return 2
    os.environ["SPACETIME_WORKER_GPUS"] = str(args.gpus)  # read by workers/multigpu.py
    os.environ["SPACETIME_WORKER_CFG_PARALLEL"] = "0" if args.no_cfg_parallel else "1"
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off
    if args.gpus > 1:
        args.concurrency = 1  # one pool process coordinates all the ranks
    from service.catalog import Catalog
    from service.config import get_settings
    from service.safety import get_policy
    from workers.output_check import MODEL_ENV as OUTPUT_CHECK_ENV
    from workers.output_check import validate_folder as validate_output_check

    try:
        settings = get_settings()
        catalog = Catalog.load(settings.models_file)
        get_policy()  # the worker re-checks prompts: a broken SPACETIME_POLICY_FILE stops it here
        if os.environ.get(OUTPUT_CHECK_ENV):  # likewise a broken output-check folder
            validate_output_check(os.environ[OUTPUT_CHECK_ENV])
    except ValueError as exc:  # OutputCheckError is one too
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
