"""Fast mode: the first-block cache, the guidance window, and mode= on the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_DIT, tiny_dit

from model.sampling import sample_latents
from model.step_cache import FastSampling, FirstBlockCache


def _inputs(B: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, TINY_DIT.in_channels, 3, 4, 6, generator=g)
    t = torch.tensor([600.0])
    ctx = torch.randn(B, 5, TINY_DIT.text_dim, generator=g)
    return x, t, ctx, torch.ones(B, 5, dtype=torch.bool)


@pytest.mark.parametrize("abs_pos", [False, True])
def test_threshold_zero_computes_exactly_what_the_model_computes(abs_pos):
    model = tiny_dit()
    if abs_pos:
        model.enable_abs_pos()
        torch.nn.init.normal_(model.pos_embedder.weight, std=0.1)
    cache = FirstBlockCache(model, threshold=0.0, max_skips=5)
    with torch.no_grad():
        for seed in range(3):
            x, t, ctx, mask = _inputs(2, seed)
            assert torch.equal(cache(x, t, ctx, mask), model(x, t, ctx, mask))
    assert (cache.steps, cache.skipped) == (3, 0)


def test_an_unchanged_first_block_reuses_the_deep_blocks_and_max_skips_bounds_the_run():
    model = tiny_dit()
    cache = FirstBlockCache(model, threshold=1e9, max_skips=2)
    x, t, ctx, mask = _inputs()
    skipped = []
    with torch.no_grad():
        full = model(x, t, ctx, mask)
        for _ in range(6):
            before = cache.skipped
            out = cache(x, t, ctx, mask)
            skipped.append(cache.skipped > before)
            torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-6)  # same input: the reuse is exact
    assert skipped == [False, True, True, False, True, True]


def test_a_changed_first_block_recomputes_and_the_reuse_differs_from_a_full_forward():
    model = tiny_dit()
    x, t, ctx, mask = _inputs()
    x2 = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        strict = FirstBlockCache(model, threshold=1e-6, max_skips=5)
        strict(x, t, ctx, mask)
        strict(x2, t, ctx, mask)
        assert strict.skipped == 0  # the change is above a tiny threshold
        loose = FirstBlockCache(model, threshold=1e9, max_skips=5)
        loose(x, t, ctx, mask)
        approx = loose(x2, t, ctx, mask)
        assert loose.skipped == 1
        assert not torch.allclose(approx, model(x2, t, ctx, mask), atol=1e-4)  # reuse is an approximation


def test_a_guided_batch_serves_the_next_conditional_only_step():
    model = tiny_dit()
    x, t, ctx, mask = _inputs(2)
    cache = FirstBlockCache(model, threshold=1e9, max_skips=5)
    with torch.no_grad():
        cache(x[:1].expand(2, -1, -1, -1, -1), t, ctx, mask)  # (cond, uncond) of one latent
        out = cache(x[:1], t, ctx[:1], mask[:1])  # cond only: rows [:1] of the cache
        assert cache.skipped == 1
        torch.testing.assert_close(out, model(x[:1], t, ctx[:1], mask[:1]), rtol=1e-5, atol=1e-6)
        one_row = FirstBlockCache(model, threshold=1e9, max_skips=5)
        one_row(x[:1], t, ctx[:1], mask[:1])
        one_row(torch.cat([x[:1], x[:1]]), t, ctx, mask)  # a 1-row cache cannot serve a 2-row batch
        assert one_row.skipped == 0


def _text(B: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 5, TINY_DIT.text_dim, generator=g), torch.ones(B, 5, dtype=torch.bool)


def test_sampler_fast_mode_counts_and_equals_exact_with_everything_off():
    model = tiny_dit()
    shape, steps = (1, 4, 2, 4, 4), 10
    run = lambda fast, stats=None: sample_latents(  # noqa: E731
        model, shape, _text(seed=1), _text(seed=2), steps, 4.0, torch.Generator().manual_seed(0), fast=fast, stats=stats)
    exact_stats: dict = {}
    exact = run(None, exact_stats)
    assert exact_stats == dict(steps=10, guided_steps=10, forwards=10, cached_forwards=0, forecast_steps=0, fp8=False)
    off = FastSampling(cache_threshold=0.0, guidance_window=(0.0, 1.0))
    assert torch.equal(run(off), exact)
    stats: dict = {}
    fast = run(FastSampling(cache_threshold=1e9, max_skips=1, guidance_window=(0.0, 0.5)), stats)
    assert stats["guided_steps"] == 5 and stats["forwards"] == 10
    assert stats["cached_forwards"] == 5  # every other step with max_skips=1
    assert not torch.equal(fast, exact)


def test_forecast_schedule_runs_the_model_on_the_warm_up_then_one_step_in_n():
    fast = FastSampling(forecast_every=3, forecast_start=0.2)
    assert [i for i in range(20) if fast.runs_model(i, 20)] == [0, 1, 2, 3, 4, 7, 10, 13, 16, 19]
    assert [i for i in range(50) if fast.runs_model(i, 50)][:12] == [*range(10), 10, 13]
    assert all(FastSampling(forecast_every=1).runs_model(i, 20) for i in range(20))  # 1: every step runs
    assert all(FastSampling(forecast_every=4, forecast_start=1.0).runs_model(i, 7) for i in range(7))
    # The default spacing is a fraction of the schedule: 0.1 -> every 2nd of 20, every 5th of 50, none of 10.
    assert [FastSampling().spacing(n) for n in (10, 19, 20, 30, 50)] == [1, 1, 2, 3, 5]
    assert [i for i in range(20) if FastSampling().runs_model(i, 20)] == [0, 1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18]
    assert [i for i in range(50) if FastSampling().runs_model(i, 50)] == [*range(10), 10, 15, 20, 25, 30, 35, 40, 45]
    assert FastSampling(forecast_gap=0.0).spacing(50) == 1 and FastSampling(forecast_every=3).spacing(50) == 3
    for bad in (dict(forecast_every=0), dict(forecast_start=1.5), dict(forecast_start=-0.1), dict(forecast_order=2),
                dict(forecast_gap=1.5), dict(forecast_gap=-0.1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FastSampling(**bad)


def test_a_forecast_extrapolates_the_last_two_outputs_in_the_timestep_and_runs_no_block():
    model = tiny_dit()
    x, _, ctx, mask = _inputs(2)
    ran = [0]
    for block in model.blocks:
        block.register_forward_hook(lambda *_: ran.__setitem__(0, ran[0] + 1))
    with torch.no_grad():
        o900 = model(x, torch.tensor([900.0]), ctx, mask)
        o800 = model(x, torch.tensor([800.0]), ctx, mask)
        for order, expected in ((1, o800 + (o800 - o900) * 0.5), (0, o800)):
            cache = FirstBlockCache(model, threshold=0.0, max_skips=0, forecast_order=order)
            cache.forecast_next = True  # nothing to forecast from yet: the model runs
            torch.testing.assert_close(cache(x, torch.tensor([900.0]), ctx, mask), o900)
            cache(x, torch.tensor([800.0]), ctx, mask)
            ran[0] = 0
            cache.forecast_next = True
            out = cache(x, torch.tensor([750.0]), ctx, mask)
            assert ran[0] == 0 and (cache.steps, cache.forecast) == (2, 1) and not cache.forecast_next
            torch.testing.assert_close(out, expected)
            cache.forecast_next = True  # a guided (2-row) history serves a conditional-only (1-row) step
            torch.testing.assert_close(cache(x[:1], torch.tensor([750.0]), ctx[:1], mask[:1]), expected[:1])
            one_row = FirstBlockCache(model, threshold=0.0, max_skips=0)
            one_row(x[:1], torch.tensor([900.0]), ctx[:1], mask[:1])
            one_row.forecast_next = True  # a 1-row history cannot serve a 2-row call: it runs
            torch.testing.assert_close(one_row(x, torch.tensor([800.0]), ctx, mask), o800)
            assert one_row.forecast == 0


def test_sampler_forecast_steps_are_counted_and_change_the_result():
    model = tiny_dit()
    shape, steps = (1, 4, 2, 4, 4), 10
    run = lambda fast, stats=None: sample_latents(  # noqa: E731
        model, shape, _text(seed=1), _text(seed=2), steps, 4.0, torch.Generator().manual_seed(0), fast=fast, stats=stats)
    exact = run(None)
    stats: dict = {}
    fast = FastSampling(cache_threshold=0.0, guidance_window=(0.0, 0.6), forecast_every=2, forecast_start=0.2)
    out = run(fast, stats)
    assert stats["forecast_steps"] == 4 and stats["forwards"] == 6 and stats["guided_steps"] == 6  # runs 0-2, 4, 6, 8
    assert not torch.equal(out, exact) and (out - exact).abs().max() < 1.0  # an approximation, not noise
    assert torch.equal(out, run(fast))  # still deterministic


def test_guidance_window_and_bad_settings():
    fast = FastSampling(guidance_window=(0.2, 0.6))
    assert [fast.guided(i, 10) for i in range(10)] == [False, False, True, True, True, True] + [False] * 4
    assert sum(FastSampling().guided(i, 20) for i in range(20)) == math.ceil(0.6 * 20)
    for bad in ((0.5, 0.2), (-0.1, 0.5), (0.0, 1.5)):
        with pytest.raises(ValueError, match="guidance_window"):
            FastSampling(guidance_window=bad)
    with pytest.raises(ValueError, match=">= 0"):
        FastSampling(cache_threshold=-1)


def test_pipeline_mode_fast_runs_reports_and_refuses_unknown_modes(tiny_pipeline):
    kwargs = dict(num_frames=5, height=32, width=48, num_inference_steps=6, seed=3)
    exact = tiny_pipeline("a red circle", **kwargs)
    assert tiny_pipeline.last_stats == dict(mode="exact", steps=6, guided_steps=6, forwards=6, cached_forwards=0,
                                            forecast_steps=0, fp8=False)
    fast = tiny_pipeline("a red circle", mode="fast", **kwargs)
    assert fast.shape == exact.shape and fast.dtype == np.uint8
    assert tiny_pipeline.last_stats["mode"] == "fast" and tiny_pipeline.last_stats["guided_steps"] < 6
    assert np.array_equal(fast, tiny_pipeline("a red circle", mode="fast", **kwargs))  # still seeded
    with pytest.raises(ValueError, match="mode must be one of exact, fast"):
        tiny_pipeline("a red circle", mode="turbo", **kwargs)


def test_compiled_blocks_keep_the_state_dict_and_the_frames(tiny_pipeline):
    kwargs = dict(num_frames=5, height=32, width=48, num_inference_steps=3, seed=1)
    keys = list(tiny_pipeline.transformer.state_dict())
    before = tiny_pipeline("a red circle", **kwargs)
    tiny_pipeline.compile_transformer(backend="eager")  # dynamo's tracing without inductor: fast on the CPU
    assert all(block._compiled_call_impl is not None for block in tiny_pipeline.transformer.blocks)
    assert list(tiny_pipeline.transformer.state_dict()) == keys  # save_pretrained still writes Wan-layout names
    assert np.array_equal(tiny_pipeline("a red circle", **kwargs), before)
    assert tiny_pipeline("a red circle", mode="fast", **kwargs).shape == before.shape  # the cache calls compiled blocks


def test_compile_transformer_passes_dynamic_to_every_block(tiny_pipeline, monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append((type(self).__name__, kw)))
    tiny_pipeline.compile_transformer(backend="eager", dynamic=False)
    assert len(seen) == len(tiny_pipeline.transformer.blocks)
    assert all(kw == {"backend": "eager", "dynamic": False} for _, kw in seen)
    seen.clear()
    tiny_pipeline.compile_transformer()
    assert {kw["dynamic"] for _, kw in seen} == {None}  # torch.compile's own default
