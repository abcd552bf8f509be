"""The encode overlap: a job's post-denoise stage runs on a background thread of its pool process
while the task returns and the next job denoises (SPACETIME_OVERLAP_ENCODE, on by default).

One thread per process, one stage at a time: `submit` waits while the previous stage still runs,
so a process holds at most one finished batch's frames besides the one it is denoising. What the
stage does (output check, signed MP4, storage, job completed, webhook) is in workers/tasks.py.

Nothing is lost on the way. The job stays in_progress under this process's worker id until the
stage completes it, and the process keeps heartbeating meanwhile. If the process dies mid-encode
its heartbeat lapses and any worker's reaper requeues the job and sends it again (its Celery
message was acked when the task returned, so the job store is what recovers it). A clean stop
(Celery warm shutdown) drains the stage before the process exits (workers/tasks.py). A stage
that hangs past its job's hard time limit is treated as the hard limit treats a task: its jobs
fail as `timeout` and the process ends (`overdue`, checked by the heartbeat thread).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("spacetime.worker")


class BackgroundStage:
    """Runs submitted callables one at a time on one daemon thread, started at the first submit."""

    def __init__(self, name: str = "finish") -> None:
        self.name = name
        self._idle = threading.BoundedSemaphore(1)  # held from a submit until that stage has run
        self._queue: queue.Queue[tuple[Sequence[str], float, Callable[[], object]]] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: tuple[Sequence[str], float] | None = None  # (job ids, monotonic deadline) of the stage running

    def submit(self, stage: Callable[[], object], job_ids: Sequence[str] = (), limit_s: float = float("inf")) -> None:
        """Run `stage` (finishing `job_ids`) in the background, within `limit_s` of its start (see
        `overdue`); blocks while the previous stage still runs. An exception raised meanwhile
        (Celery's soft time limit) leaves `stage` unrun and the slot free."""
        self._idle.acquire()
        queued = False
        try:
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                    self._thread.start()
            self._queue.put((job_ids, limit_s, stage))
            queued = True
        finally:
            if not queued:
                self._release()

    def overdue(self) -> Sequence[str]:
        """The job ids of the running stage once it has run past its limit (a hung encode), else ()."""
        running = self._running
        return running[0] if running is not None and time.monotonic() > running[1] else ()

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until nothing submitted is left to run; False when `timeout_s` passed first."""
        if not self._idle.acquire(timeout=timeout_s):
            return False
        self._idle.release()
        return True

    def _release(self) -> None:
        try:
            self._idle.release()
        except ValueError:  # released already: an exception landed between the put and `queued`
            pass

    def _loop(self) -> None:
        while True:
            job_ids, limit_s, stage = self._queue.get()
            self._running = (job_ids, time.monotonic() + limit_s)
            try:
                stage()
            except BaseException:  # a stage handles its own job's failures; this only keeps the thread alive
                log.exception("background stage raised", extra={"job_ids": list(job_ids)})
            finally:
                self._running = None
                self._release()
