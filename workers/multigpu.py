"""A worker that owns N GPUs: N rank processes denoise every job together (model/parallel.py).

The Celery pool process stays the coordinator: it holds no GPU and no process group, so a rank
that dies cannot take it down. `RankGroupPipeline` looks like a pipeline to `workers/tasks.py`
(same call, `weights_hash`, `is_random_weights`), and behind the call:

    pool process ──job──▶ rank 0 … rank N-1   (subprocesses, one GPU each, NCCL;
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

import argparse
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge, wait
from typing import Any, Callable

import numpy as np

log = logging.getLogger("spacetime.worker.multigpu")
GPUS_ENV = "SPACETIME_WORKER_GPUS"  # ranks per worker (set by `spacetime worker --gpus N`)
CFG_PARALLEL_ENV = "SPACETIME_WORKER_CFG_PARALLEL"  # "1": guidance parallel when N is even
RANK_TIMEOUT_ENV = "SPACETIME_RANK_TIMEOUT_S"
KEY_ENV = "SPACETIME_RANK_KEY"  # hex authkey of the coordinator's socket, handed to its ranks only


class RankFailed(RuntimeError):
    """A rank died, raised or went silent; the job fails and the ranks restart."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, source: str, device: str, cfg_size: int, conn: Connection) -> None:
    """One rank: join the group, load the pipeline, serve jobs from the coordinator until 'stop'."""
    import torch

    from model.parallel import init_rank, make_mesh
    from model.parallel_pipeline import parallel_generate
    from model.pipeline import GenerationCancelled, TextToVideoPipeline, load_pipeline

    cuda = device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(1)  # N CPU ranks share the cores
    try:
        pipe = load_pipeline(source, device=f"cuda:{rank}" if cuda else "cpu")
        if not isinstance(pipe, TextToVideoPipeline):
            raise TypeError(f"{source}: only native pipelines (VideoDiT) run across GPUs, not {type(pipe).__name__}")
        init_rank(rank, world_size, port, "nccl" if cuda else "gloo")
        mesh = make_mesh(cfg_size)
    except Exception as exc:  # say why before exiting: the coordinator puts it in the job's error
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    info = {"weights_hash": pipe.weights_hash, "is_random_weights": pipe.is_random_weights} if rank == 0 else {}
    conn.send(("ready", info))

    def ask_coordinator(step: int, total: int) -> bool:
        conn.send(("step", step, total))
        answer = conn.recv()
        if not isinstance(answer, bool):  # ("stop",): the coordinator gave up on this job
            raise SystemExit(0)
        return answer

    while True:
        message = conn.recv()  # EOFError when the coordinator is gone: this rank exits
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

    supports_remix = True  # init_video + strength travel to parallel_generate with the request

    def __init__(self, source: str, world_size: int, device: str = "cuda", cfg_parallel: bool = True,
                 rank_timeout_s: float = 600.0, start_timeout_s: float = 1800.0):
        if world_size < 2:
            raise ValueError(f"a rank group needs at least 2 ranks, got {world_size}")
        self.source, self.world_size, self.device = source, world_size, device
        self.cfg_size = 2 if cfg_parallel and world_size % 2 == 0 else 1
        self.rank_timeout_s, self.start_timeout_s = rank_timeout_s, start_timeout_s
        self.weights_hash, self.is_random_weights = "", None
        self.processes: list[subprocess.Popen] = []
        self.conns: list[Connection] = []
        self.start()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the ranks and wait until every one has loaded the pipeline.

        Plain subprocesses, not multiprocessing: Celery's prefork pool process is daemonic and its
        multiprocessing state cannot start children. Each rank dials back to a one-off socket
        (random authkey, 127.0.0.1) and speaks multiprocessing's Connection protocol on it.
        """
        key = secrets.token_bytes(32)
        deadline = time.monotonic() + self.start_timeout_s
        with socket.create_server(("127.0.0.1", 0)) as server:
            server.settimeout(1.0)
            env = {**os.environ, KEY_ENV: key.hex()}
            dist_port = _free_port()
            for rank in range(self.world_size):
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "workers.multigpu", str(rank), str(self.world_size), str(dist_port),
                     self.source, self.device, str(self.cfg_size), str(server.getsockname()[1])], env=env))
            by_rank: dict[int, Connection] = {}
            while len(by_rank) < self.world_size:
                try:
                    sock, _ = server.accept()
                except TimeoutError:
                    dead = [r for r, p in enumerate(self.processes) if p.poll() is not None]
                    if dead or time.monotonic() > deadline:
                        self.stop()
                        raise RankFailed(f"ranks {dead} exited while starting" if dead else "ranks did not start in time")
                    continue
                sock.settimeout(None)
                conn = Connection(sock.detach())
                deliver_challenge(conn, key)
                answer_challenge(conn, key)
                by_rank[int(conn.recv())] = conn
        self.conns = [by_rank[r] for r in range(self.world_size)]
        ready: dict[int, tuple] = {}
        while len(ready) < self.world_size:  # any rank's failure ends the start (the others may wait on it)
            try:
                rank, message = self._receive_any(ready, timeout_s=max(0.0, deadline - time.monotonic()))
            except RankFailed as exc:
                self.stop()
                raise RankFailed(f"starting: {exc}") from None
            if message[0] != "ready":
                self.stop()
                raise RankFailed(f"rank {rank} did not start: {message[1]}")
            ready[rank] = message
        self.weights_hash = ready[0][1]["weights_hash"]
        self.is_random_weights = ready[0][1]["is_random_weights"]
        log.info("ranks ready", extra={"ranks": self.world_size, "cfg_size": self.cfg_size})

    def stop(self) -> None:
        """Ask the ranks to leave, then kill any that do not."""
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []

    @property
    def running(self) -> bool:
        return len(self.conns) == self.world_size and all(p.poll() is None for p in self.processes)

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
        failed = {rank: message[1:] for rank, message in outcomes.items() if message[0] != "done"}
        raise RankFailed(f"ranks disagreed or failed: {failed}")

    # ------------------------------------------------------------------ messages

    def _exit_code(self, rank: int) -> int | None:
        try:
            return self.processes[rank].wait(5)
        except subprocess.TimeoutExpired:
            return None

    def _receive_any(self, finished: dict[int, tuple], timeout_s: float | None = None) -> tuple[int, tuple]:
        """The next message from any unfinished rank; a closed connection means that rank died."""
        pending = [r for r in range(self.world_size) if r not in finished]
        timeout_s = self.rank_timeout_s if timeout_s is None else timeout_s
        ready = wait([self.conns[r] for r in pending], timeout=timeout_s)
        if not ready:
            raise RankFailed(f"no word from ranks {pending} for {timeout_s:.0f} s; the ranks restart")
        rank = pending[[self.conns[r] for r in pending].index(ready[0])]
        try:
            return rank, self.conns[rank].recv()
        except (EOFError, OSError):
            said = {r: m[1] for r, m in finished.items() if m[0] == "error"}
            raise RankFailed(f"rank {rank} died (exit code {self._exit_code(rank)})"
                             f"{f', errors: {said}' if said else ''}; the ranks restart for the next job") from None


def rank_group_from_env(source: str, device: str) -> RankGroupPipeline | None:
    """The worker's pipeline when `spacetime worker --gpus N` (N > 1) set the environment, else None."""
    world_size = int(os.environ.get(GPUS_ENV, "1"))
    if world_size <= 1:
        return None
    return RankGroupPipeline(source, world_size, device=device.split(":")[0],
                             cfg_parallel=os.environ.get(CFG_PARALLEL_ENV, "1") == "1",
                             rank_timeout_s=float(os.environ.get(RANK_TIMEOUT_ENV, "600")))


def main(argv: list[str] | None = None) -> None:
    """A rank process: `python -m workers.multigpu RANK WORLD DIST_PORT SOURCE DEVICE CFG COORD_PORT`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    for name, kind in (("rank", int), ("world_size", int), ("dist_port", int), ("source", str), ("device", str),
                       ("cfg_size", int), ("coordinator_port", int)):
        parser.add_argument(name, type=kind)
    args = parser.parse_args(argv)
    conn = Client(("127.0.0.1", args.coordinator_port), authkey=bytes.fromhex(os.environ.pop(KEY_ENV)))
    conn.send(args.rank)
    _rank_main(args.rank, args.world_size, args.dist_port, args.source, args.device, args.cfg_size, conn)


if __name__ == "__main__":
    main()
