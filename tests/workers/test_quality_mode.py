"""The worker hands a job's `quality` to the pipeline: fast jobs run the pipeline's fast mode."""

from __future__ import annotations

import importlib
import warnings

import pytest

from service.catalog import Catalog
from service.config import get_settings

JOB = {"prompt": "a red circle moving left", "negative_prompt": "", "size": "128x128", "seconds": "1", "fps": "8",
       "num_inference_steps": "3", "guidance_scale": "5.0", "seed": "7"}


@pytest.fixture()
def sample_frames(monkeypatch: pytest.MonkeyPatch):
    """workers.tasks builds its Celery app from the settings at import: give it embedded ones."""
    monkeypatch.setenv("SPACETIME_EMBEDDED", "true")
    get_settings.cache_clear()
    try:
        yield importlib.import_module("workers.tasks").sample_frames
    finally:
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def pipe():
    from model.pipeline import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline("spacetime-tiny")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared machine: one thread is faster
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("quality, mode", [(None, "exact"), ("fast", "fast")])
def test_the_job_quality_selects_the_pipeline_mode(pipe, sample_frames, quality: str | None, mode: str) -> None:
    job = dict(JOB) if quality is None else {**JOB, "quality": quality}  # None: a record from before the field
    model = Catalog.load(None).get("spacetime-tiny")
    steps = []
    frames = sample_frames(pipe, job, model, lambda step, total: steps.append(step) is None)
    assert frames.shape == (9, 128, 128, 3) and steps == [1, 2, 3]
    assert pipe.last_stats["mode"] == mode
    assert pipe.last_stats["guided_steps"] == (3 if mode == "exact" else 2)  # fast: guidance on 60% of steps


def test_a_fast_job_at_the_default_steps_forecasts_and_still_reports_every_step(pipe, sample_frames) -> None:
    job = {**JOB, "num_inference_steps": "20", "quality": "fast"}
    model = Catalog.load(None).get("spacetime-tiny")
    steps = []
    frames = sample_frames(pipe, job, model, lambda step, total: steps.append((step, total)) is None)
    assert frames.shape == (9, 128, 128, 3)
    assert steps == [(i, 20) for i in range(1, 21)]  # progress moves on forecast steps too
    stats = pipe.last_stats
    # 20 steps, gap 0.1 -> the model runs on steps 0-3, then 4, 6, ..., 18: 12 runs, 8 forecasts
    assert (stats["forwards"], stats["forecast_steps"], stats["guided_steps"]) == (12, 8, 12)
