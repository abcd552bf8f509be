"""MLP's fused bias + GELU epilogue (`VideoDiT.enable_fused_gelu`): off the CUDA path it changes
nothing; forced onto the CPU its plumbing computes the MLP; it never bypasses FP8 or autograd.

The fused op's numbers on CUDA (tanh-GELU in cuBLASLt's epilogue) are checked in test_gpu.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_DIT, tiny_dit

from model import dit
from model.fp8 import enable_fp8, fp8_matmuls


def _inputs(B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, TINY_DIT.in_channels, 3, 4, 6, generator=g)
    t = torch.rand(B, generator=g) * 1000
    ctx = torch.randn(B, 5, TINY_DIT.text_dim, generator=g)
    return x, t, ctx


@pytest.fixture
def fused_calls(monkeypatch) -> list[tuple]:
    """Counts calls of torch._addmm_activation (the fused op), still computing them."""
    calls: list[tuple] = []
    real = torch._addmm_activation

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_addmm_activation", counting)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_switch_changes_nothing_on_the_cpu(dtype, fused_calls):
    model = tiny_dit().to(dtype)
    x, t, ctx = _inputs()
    keys = list(model.state_dict())
    with torch.no_grad():
        off = model(x.to(dtype), t, ctx.to(dtype))
        assert model.enable_fused_gelu() == TINY_DIT.num_layers
        assert all(block.mlp.fused_gelu for block in model.blocks)
        on = model(x.to(dtype), t, ctx.to(dtype))
    assert torch.equal(on, off) and not fused_calls  # the CPU never takes the fused path
    assert list(model.state_dict()) == keys
    assert model.enable_fused_gelu(False) == TINY_DIT.num_layers and not model.blocks[0].mlp.fused_gelu


def test_forced_fused_branch_computes_the_mlp(monkeypatch, fused_calls):
    """The branch's reshapes, bias and transposed weight, run on the CPU by pretending x is on CUDA.
    The CPU kernel applies the erf GELU, not tanh: close to the model's MLP, not equal (which is
    why the branch is CUDA-only, and how this test knows the branch ran)."""
    monkeypatch.setattr(dit, "fused_gelu_device", lambda x: True)
    mlp = tiny_dit().blocks[0].mlp
    h = torch.randn(2, 7, TINY_DIT.dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = mlp(h)
        mlp.fused_gelu = True
        fused = mlp(h)
    assert len(fused_calls) == 1 and fused.shape == plain.shape == h.shape
    assert not torch.equal(fused, plain)
    torch.testing.assert_close(fused, plain, rtol=1e-2, atol=1e-3)
    # erf GELU in the reference too: the same function, so equal to float rounding
    erf = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(h)))
    torch.testing.assert_close(fused, erf, rtol=1e-5, atol=1e-6)


def test_fused_branch_stays_off_with_autograd_or_another_dtype(monkeypatch, fused_calls):
    monkeypatch.setattr(dit, "fused_gelu_device", lambda x: True)
    mlp = tiny_dit().blocks[0].mlp
    mlp.fused_gelu = True
    h = torch.randn(2, 7, TINY_DIT.dim)
    out = mlp(h)  # grad enabled: torch._addmm_activation has no derivative
    out.sum().backward()
    assert mlp.fc1.weight.grad is not None
    with torch.no_grad():
        assert not mlp.runs_fused(h.bfloat16())  # weights float32, input bf16: F.linear's error stays
    assert not fused_calls


def test_fused_branch_never_bypasses_fp8(monkeypatch, fused_calls):
    """With FP8 prepared and on, fc1 multiplies in FP8 as before; with FP8 prepared but off (exact
    requests in a process that also serves FP8 fast requests) the fused branch runs."""
    monkeypatch.setattr(dit, "fused_gelu_device", lambda x: True)
    model = tiny_dit()
    x, t, ctx = _inputs()
    with torch.no_grad():
        enable_fp8(model)
        with fp8_matmuls():
            fp8_only = model(x, t, ctx)
        model.enable_fused_gelu()
        with fp8_matmuls():
            both = model(x, t, ctx)
        assert torch.equal(both, fp8_only) and not fused_calls
        model(x, t, ctx)
    assert len(fused_calls) == TINY_DIT.num_layers


def test_compiled_block_traces_the_fused_branch(monkeypatch):
    """Dynamo traces the switch, the FP8 check and torch._addmm_activation, and inductor keeps the
    op as one extern call (not decomposed into a matmul and a GELU pass). The compiled blocks give
    the eager fused output (the CPU's erf GELU) to float rounding, 100x closer than the unfused one."""
    from torch._inductor.utils import run_and_get_code

    monkeypatch.setattr(dit, "fused_gelu_device", lambda x: True)
    model = tiny_dit()
    x, t, ctx = _inputs()
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    with torch.no_grad():
        plain = model(x, t, ctx)
        model.enable_fused_gelu()
        eager = model(x, t, ctx)
        for block in model.blocks:
            block.compile()
        compiled, code = run_and_get_code(model, x, t, ctx)
    assert "aten._addmm_activation.default(" in "".join(code)
    assert rel(compiled, eager) < rel(eager, plain) / 100  # CPU: 1.3e-7 against 2.0e-5
