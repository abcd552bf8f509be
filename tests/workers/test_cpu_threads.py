"""A CPU worker process sets torch's thread count: configured, else cores / pool processes."""

from __future__ import annotations

import importlib

import pytest
import torch

from service.config import Settings, get_settings


@pytest.fixture()
def tasks(monkeypatch: pytest.MonkeyPatch):
    """workers.tasks builds its Celery app from the settings at import: give it embedded ones."""
    monkeypatch.setenv("SPACETIME_EMBEDDED", "true")
    get_settings.cache_clear()
    before = torch.get_num_threads()
    try:
        yield importlib.import_module("workers.tasks")
    finally:
        torch.set_num_threads(before)
        get_settings.cache_clear()


def test_threads_are_the_cores_shared_among_processes_unless_configured(tasks) -> None:
    assert tasks.cpu_threads(0, cores=16, processes=4) == 4
    assert tasks.cpu_threads(0, cores=2, processes=1) == 2
    assert tasks.cpu_threads(0, cores=2, processes=3) == 1  # never 0
    assert tasks.cpu_threads(0, cores=8, processes=0) == 8
    assert tasks.cpu_threads(3, cores=2, processes=4) == 3  # SPACETIME_CPU_THREADS wins


def test_a_cpu_worker_applies_it_and_a_gpu_worker_leaves_torch_alone(tasks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACETIME_WORKER_PROCESSES", "64")  # more processes than cores: 1 thread each
    assert tasks.set_cpu_threads(Settings(embedded=True, device="cpu")) == 1 and torch.get_num_threads() == 1
    assert tasks.set_cpu_threads(Settings(embedded=True, device="cpu", cpu_threads=2)) == 2
    assert torch.get_num_threads() == 2
    assert tasks.set_cpu_threads(Settings(embedded=True, device="cuda")) is None and torch.get_num_threads() == 2


def test_a_negative_thread_count_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_threads"):
        Settings(embedded=True, cpu_threads=-1)


def test_compile_model_compiles_the_loaded_dit_blocks_and_is_off_by_default(tasks) -> None:
    from service.catalog import Catalog

    catalog = Catalog.load(None)
    model = catalog.get("spacetime-tiny")
    for flag in (False, True):
        ctx = tasks.WorkerContext(Settings(embedded=True, compile_model=flag), catalog, None, None, None, [])
        blocks = ctx.pipeline(model).transformer.blocks  # compiling is lazy: nothing runs until a job
        assert all((block._compiled_call_impl is not None) == flag for block in blocks)


def test_fast_fp8_setting_turns_fp8_on_for_fast_jobs_only_and_is_off_by_default(tasks) -> None:
    from service.catalog import Catalog

    catalog = Catalog.load(None)
    model = catalog.get("spacetime-tiny")
    for flag in (False, True):
        ctx = tasks.WorkerContext(Settings(embedded=True, fast_fp8=flag), catalog, None, None, None, [])
        assert ctx.pipeline(model).fast_sampling.fp8 is flag


def test_fast_forecast_gap_setting_reaches_the_pipeline_and_bad_values_are_refused(tasks) -> None:
    from pydantic import ValidationError

    from model.step_cache import FastSampling
    from service.catalog import Catalog

    catalog = Catalog.load(None)
    model = catalog.get("spacetime-tiny")
    for gap in (0.0, 0.1, 0.25):
        ctx = tasks.WorkerContext(Settings(embedded=True, fast_forecast_gap=gap), catalog, None, None, None, [])
        assert ctx.pipeline(model).fast_sampling.forecast_gap == gap
    assert Settings(embedded=True).fast_forecast_gap == FastSampling().forecast_gap  # the same default
    for bad in (-0.1, 1.5):
        with pytest.raises(ValidationError, match="fast_forecast_gap"):
            Settings(embedded=True, fast_forecast_gap=bad)
