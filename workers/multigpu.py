"""A worker that owns N GPUs: N rank processes denoise every job together (model/parallel.py).

The Celery pool process stays the coordinator: it holds no GPU and no process group, so a rank
that dies cannot take it down. `RankGroupPipeline` looks like a pipeline to `workers/tasks.py`
(same call, `weights_hash`, `is_random_weights`), and behind the call:

    pool process ──job──▶ rank 0 … rank N-1   (torch.multiprocessing spawn, one GPU each, NCCL;
         ▲                   │ parallel_generate: sequence (+ guidance) parallel, tile-parallel decode
         └─progress? / frames┘ rank 0 asks "go on?" every step; its answer is broadcast to all ranks

The job goes to every rank at once (the "broadcast" is the coordinator's send). Rank 0 reports
each step and gets the Celery-side answer (progress recorded, cancel flag read from Redis), so
cancellation stops all ranks at the same step. Failure: a rank that exits, raises, or stays
silent past `rank_timeout_s` fails the job with `RankFailed`; every rank is then stopped and the
group is started again (weights reloaded) at the next job. Validation errors and cancellations
are raised by every rank alike and leave the group running.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

import numpy as np

from model.parallel import free_port

log = logging.getLogger("spacetime.worker.multigpu")
GPUS_ENV = "SPACETIME_WORKER_GPUS"  # ranks per worker (set by `spacetime worker --gpus N`)
CFG_PARALLEL_ENV = "SPACETIME_WORKER_CFG_PARALLEL"  # "1": guidance parallel when N is even
RANK_TIMEOUT_ENV = "SPACETIME_RANK_TIMEOUT_S"


class RankFailed(RuntimeError):
    """A rank died, raised or went silent; the job fails and the ranks restart."""


def _rank_main(rank: int, world_size: int, port: int, source: str, device: str, cfg_size: int, conn: Connection) -> None:
    """One rank: join the group, load the pipeline, serve jobs from the coordinator until 'stop'."""
    import torch

    from model.parallel import init_rank, make_mesh
    from model.parallel_pipeline import parallel_generate
    from model.pipeline import GenerationCancelled, TextToVideoPipeline, load_pipeline

    cuda = device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(1)  # N CPU ranks share the cores
    init_rank(rank, world_size, port, "nccl" if cuda else "gloo")
    pipe = load_pipeline(source, device=f"cuda:{rank}" if cuda else "cpu")
    if not isinstance(pipe, TextToVideoPipeline):
        raise TypeError(f"{source}: only native pipelines (VideoDiT) run across GPUs, not {type(pipe).__name__}")
    mesh = make_mesh(cfg_size)
    info = {"weights_hash": pipe.weights_hash, "is_random_weights": pipe.is_random_weights} if rank == 0 else {}
    conn.send(("ready", info))

    def ask_coordinator(step: int, total: int) -> bool:
        conn.send(("step", step, total))
        return bool(conn.recv())

    while True:
        message = conn.recv()
        if message[0] == "stop":
            break
        try:
            frames = parallel_generate(pipe, mesh, **message[1], callback=ask_coordinator if rank == 0 else None)
            conn.send(("done", frames))
        except GenerationCancelled as exc:
            conn.send(("cancelled", str(exc)))
        except ValueError as exc:  # a bad request: every rank refuses it before any collective
            conn.send(("invalid", str(exc)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            raise  # this rank's process group may be broken: exit, the coordinator restarts the group
    torch.distributed.destroy_process_group()


class RankGroupPipeline:
    """N rank processes behind the pipeline call of docs/contracts.md."""

    def __init__(self, source: str, world_size: int, device: str = "cuda", cfg_parallel: bool = True,
                 rank_timeout_s: float = 600.0, start_timeout_s: float = 1800.0):
        if world_size < 2:
            raise ValueError(f"a rank group needs at least 2 ranks, got {world_size}")
        self.source, self.world_size, self.device = source, world_size, device
        self.cfg_size = 2 if cfg_parallel and world_size % 2 == 0 else 1
        self.rank_timeout_s, self.start_timeout_s = rank_timeout_s, start_timeout_s
        self.weights_hash, self.is_random_weights = "", None
        self.processes: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.start()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Spawn the ranks and wait until every one has loaded the pipeline."""
        context = mp.get_context("spawn")
        port = free_port()
        for rank in range(self.world_size):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_rank_main, name=f"spacetime-rank-{rank}", daemon=True,
                args=(rank, self.world_size, port, self.source, self.device, self.cfg_size, theirs),
            )
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns.append(ours)
        started = time.monotonic()
        for rank in range(self.world_size):
            message = self._receive(rank, self.start_timeout_s - (time.monotonic() - started), "starting")
            if message[0] != "ready":
                self.stop()
                raise RankFailed(f"rank {rank} did not start: {message}")
            if rank == 0:
                self.weights_hash = message[1]["weights_hash"]
                self.is_random_weights = message[1]["is_random_weights"]
        log.info("ranks ready", extra={"ranks": self.world_size, "cfg_size": self.cfg_size,
                                       "load_s": round(time.monotonic() - started, 1)})

    def stop(self) -> None:
        """Ask the ranks to leave, then terminate any that do not."""
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 10
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.is_alive() for p in self.processes)

    # ------------------------------------------------------------------ the pipeline call

    def __call__(self, callback: Callable[[int, int], bool | None] | None = None, **request: Any) -> np.ndarray:
        from model.pipeline import GenerationCancelled

        if request.pop("mode", "exact") != "exact":
            raise ValueError("fast mode does not run across GPUs; send quality 'exact' to a multi-GPU worker")
        if not self.running:
            log.warning("restarting the ranks", extra={"ranks": self.world_size})
            self.stop()
            self.start()
        try:
            for conn in self.conns:
                conn.send(("job", request))
            outcomes: dict[int, tuple] = {}
            while len(outcomes) < self.world_size:
                rank, message = self._receive_any(outcomes)
                if message[0] == "step":  # rank 0 waits for the answer before its next collective
                    keep_going = callback is None or callback(message[1], message[2]) is not False
                    self.conns[0].send(keep_going)
                else:
                    outcomes[rank] = message
        except BaseException:  # RankFailed, a soft time limit, Ctrl-C: the ranks are mid-job
            self.stop()
            raise
        kinds = {message[0] for message in outcomes.values()}
        if kinds == {"done"}:
            return outcomes[0][1]
        if kinds == {"cancelled"}:
            raise GenerationCancelled(outcomes[0][1])
        if kinds == {"invalid"}:
            raise ValueError(outcomes[0][1])
        self.stop()
        failed = {rank: message[1:] for rank, message in outcomes.items() if message[0] not in ("done",)}
        raise RankFailed(f"ranks disagreed or failed: {failed}")

    # ------------------------------------------------------------------ messages

    def _receive(self, rank: int, timeout_s: float, doing: str) -> tuple:
        conn, process = self.conns[rank], self.processes[rank]
        ready = wait([conn, process.sentinel], timeout=max(0.0, timeout_s))
        if conn in ready:
            try:
                return conn.recv()
            except EOFError:
                pass
        if process.sentinel in ready or not process.is_alive():
            process.join(1)
            self.stop()
            raise RankFailed(f"rank {rank} exited while {doing} (exit code {process.exitcode})")
        self.stop()
        raise RankFailed(f"rank {rank} silent for {timeout_s:.0f} s while {doing}")

    def _receive_any(self, finished: dict[int, tuple]) -> tuple[int, tuple]:
        """The next message from any unfinished rank; a dead rank (even a finished one) fails the job."""
        pending = [r for r in range(self.world_size) if r not in finished]
        waitables = [self.conns[r] for r in pending] + [p.sentinel for p in self.processes]
        ready = wait(waitables, timeout=self.rank_timeout_s)
        for rank in pending:  # messages first: a rank that reported an error and exited said why
            if self.conns[rank] in ready:
                try:
                    return rank, self.conns[rank].recv()
                except EOFError:
                    pass
        for rank, process in enumerate(self.processes):
            if process.sentinel in ready or not process.is_alive():
                process.join(1)
                said = {r: m[1] for r, m in finished.items() if m[0] == "error"}
                raise RankFailed(f"rank {rank} died during the job (exit code {process.exitcode})"
                                 f"{f', errors: {said}' if said else ''}; the ranks restart for the next job")
        raise RankFailed(f"no word from ranks {pending} for {self.rank_timeout_s:.0f} s; the ranks restart")


def rank_group_from_env(source: str, device: str) -> RankGroupPipeline | None:
    """The worker's pipeline when `spacetime worker --gpus N` (N > 1) set the environment, else None."""
    world_size = int(os.environ.get(GPUS_ENV, "1"))
    if world_size <= 1:
        return None
    return RankGroupPipeline(source, world_size, device=device.split(":")[0],
                             cfg_parallel=os.environ.get(CFG_PARALLEL_ENV, "1") == "1",
                             rank_timeout_s=float(os.environ.get(RANK_TIMEOUT_ENV, "600")))
