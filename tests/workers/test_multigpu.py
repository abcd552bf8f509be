"""The multi-GPU worker's rank group, run as 2 real CPU ranks over gloo (the GPU path differs only
in the backend and the device): same frames as one process, progress, cancellation, refusals, and
a rank killed mid-job failing that job cleanly and the ranks restarting for the next."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest
import torch

from model.pipeline import GenerationCancelled, load_pipeline
from workers.multigpu import RankFailed, RankGroupPipeline

REQUEST = dict(prompt="a red circle moving left", negative_prompt="", num_frames=9, height=48, width=64, fps=8,
               num_inference_steps=3, guidance_scale=5.0, seed=11)


@pytest.fixture(scope="module")
def reference():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline("spacetime-tiny")
    frames = pipe(**REQUEST)
    torch.set_num_threads(before)
    return frames, pipe.weights_hash


def test_rank_group_serves_cancels_refuses_and_survives_a_dead_rank(reference):
    expected, weights_hash = reference
    group = RankGroupPipeline("spacetime-tiny", 2, device="cpu", rank_timeout_s=120)
    try:
        # 1. Same video as one process (guidance parallel: each rank runs one of the two passes).
        steps: list[tuple[int, int]] = []
        frames = group(callback=lambda step, total: steps.append((step, total)) or True, **REQUEST)
        assert frames.shape == expected.shape == (9, 48, 64, 3)
        assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1
        assert steps == [(1, 3), (2, 3), (3, 3)]
        assert group.weights_hash == weights_hash

        # 2. Cancellation from the coordinator's callback stops every rank; the group stays up.
        with pytest.raises(GenerationCancelled, match="after step 1 of 3"):
            group(callback=lambda step, total: False, **REQUEST)
        # 3. A bad request is refused by every rank with the pipeline's message; fast mode is refused.
        with pytest.raises(ValueError, match="num_frames must be 4k\\+1"):
            group(**{**REQUEST, "num_frames": 10})
        with pytest.raises(ValueError, match="fast mode does not run across GPUs"):
            group(mode="fast", **REQUEST)
        assert group.running

        # 4. A rank killed mid-job fails that job with a clear error ...
        def kill_rank_1(step: int, total: int) -> bool:
            os.kill(group.processes[1].pid, signal.SIGKILL)
            return True

        with pytest.raises(RankFailed, match="rank 1 died"):
            group(callback=kill_rank_1, **REQUEST)
        assert not group.running
        # ... and the next job restarts the ranks and succeeds.
        frames = group(**REQUEST)
        assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1
    finally:
        group.stop()
    assert not group.processes


def test_a_rank_group_needs_two_ranks():
    with pytest.raises(ValueError, match="at least 2 ranks"):
        RankGroupPipeline("spacetime-tiny", 1, device="cpu")


def test_a_rank_that_cannot_load_fails_the_start_with_its_reason():
    with pytest.raises(RankFailed, match="did not start: ValueError: unknown preset 'no-such-model'"):
        RankGroupPipeline("no-such-model", 2, device="cpu", start_timeout_s=120)


def test_worker_refuses_zero_gpus(monkeypatch, capsys):
    from workers.cli import main

    monkeypatch.setenv("SPACETIME_WORKER_MODELS", "unchanged")  # restored after the test
    assert main(["worker", "--gpus", "0"]) == 2
    assert "--gpus must be at least 1, got 0" in capsys.readouterr().err
