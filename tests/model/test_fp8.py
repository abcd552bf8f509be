"""FP8 matmuls (model/fp8.py): quantisation, the linear path, opt-in wiring into fast mode."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_dit

from model.fp8 import enable_fp8, fp8_linear, fp8_matmuls, quantize_rows
from model.sampling import sample_latents
from model.step_cache import FastSampling


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_rows_quantise_to_e4m3_with_their_own_scale():
    x = torch.randn(8, 64) * torch.logspace(-3, 3, 8)[:, None]  # rows six decades apart
    x8, scale = quantize_rows(x)
    assert x8.dtype == torch.float8_e4m3fn and scale.shape == (8, 1)
    back = x8.float() * scale
    assert float(back.abs().max(dim=1).values.div(x.abs().max(dim=1).values).sub(1).abs().max()) < 1e-6  # row max exact
    for i in range(8):  # every row keeps e4m3's relative precision, whatever its magnitude
        assert rel(back[i], x[i]) < 0.05


def test_fp8_linear_is_close_to_the_exact_one_but_not_equal():
    torch.manual_seed(0)
    layer = torch.nn.Linear(128, 96)
    x = torch.randn(2, 10, 128)
    exact, fast = layer(x), fp8_linear(layer, x)
    assert fast.shape == exact.shape == (2, 10, 96)
    assert 0 < rel(fast, exact) < 0.06


def test_enable_fp8_switches_only_inside_the_context_and_keeps_the_state_dict():
    model = tiny_dit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t, ctx = torch.tensor([500.0]), torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x, t, ctx)
        assert enable_fp8(model) == 2 * (8 + 2)  # per block: self and cross q/k/v/o, MLP fc1/fc2
        assert enable_fp8(model) == 20  # idempotent
        assert torch.equal(model(x, t, ctx), ref)  # outside fp8_matmuls: the exact path, bit for bit
        with fp8_matmuls():
            fast = model(x, t, ctx)
        assert torch.equal(model(x, t, ctx), ref)  # the switch is back off
    assert 0 < rel(fast, ref) < 0.2
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_fp8_refuses_sizes_scaled_mm_cannot_take_and_changes_nothing():
    model = tiny_dit()
    model.blocks[1].mlp.fc2 = torch.nn.Linear(64, 30)
    with pytest.raises(ValueError, match="multiples of 16"):
        enable_fp8(model)
    assert not any("_fp8_forward" in m.__dict__ for m in model.modules())


def test_fast_mode_runs_fp8_only_when_asked():
    model = tiny_dit()
    cond = (torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(1)), torch.ones(1, 5, dtype=torch.bool))
    uncond = (torch.zeros(1, 5, 16), torch.ones(1, 5, dtype=torch.bool))
    run = lambda fast, stats: sample_latents(model, (1, 4, 3, 4, 6), cond, uncond, 6, 5.0,
                                             torch.Generator().manual_seed(0), fast=fast, stats=stats)
    no_cache = FastSampling(cache_threshold=0.0)
    plain_stats: dict = {}
    plain = run(no_cache, plain_stats)
    fp8_stats: dict = {}
    fp8 = run(dataclasses.replace(no_cache, fp8=True), fp8_stats)
    assert plain_stats["fp8"] is False and fp8_stats["fp8"] is True
    assert 0 < rel(fp8, plain) < 0.2
    exact_stats: dict = {}
    exact = sample_latents(model, (1, 4, 3, 4, 6), cond, uncond, 6, 5.0, torch.Generator().manual_seed(0), stats=exact_stats)
    again = sample_latents(model, (1, 4, 3, 4, 6), cond, uncond, 6, 5.0, torch.Generator().manual_seed(0))
    assert exact_stats["fp8"] is False and torch.equal(exact, again)  # exact mode unaffected afterwards


def test_pipeline_fast_fp8_reports_it_and_leaves_exact_requests_alone(tiny_pipeline):
    kwargs = dict(num_frames=5, height=32, width=32, num_inference_steps=4, seed=3)
    exact = tiny_pipeline("a red circle", **kwargs)
    tiny_pipeline.fast_sampling = dataclasses.replace(tiny_pipeline.fast_sampling, fp8=True)
    fast = tiny_pipeline("a red circle", mode="fast", **kwargs)
    assert tiny_pipeline.last_stats["fp8"] is True and fast.shape == exact.shape == (5, 32, 32, 3)
    assert (tiny_pipeline("a red circle", **kwargs) == exact).all()  # exact requests unchanged
    assert tiny_pipeline.last_stats["fp8"] is False


def test_fp8_works_inside_compiled_blocks():
    """A worker may set both SPACETIME_COMPILE_MODEL and SPACETIME_FAST_FP8: the compiled blocks
    trace the FP8 path (one graph per switch value) and give what the eager FP8 path gives, within
    the rounding of a different kernel."""
    model = tiny_dit()
    x = torch.randn(1, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t, ctx = torch.tensor([500.0]), torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x, t, ctx)
        enable_fp8(model)
        with fp8_matmuls():
            eager8 = model(x, t, ctx)
        for block in model.blocks:
            block.compile()
        with fp8_matmuls():
            compiled8 = model(x, t, ctx)
        compiled = model(x, t, ctx)
    torch.testing.assert_close(compiled, ref, rtol=1e-4, atol=1e-5)
    assert rel(compiled8, eager8) < 0.05 and 0 < rel(compiled8, ref) < 0.2
