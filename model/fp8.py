"""FP8 (e4m3) matmuls for the DiT blocks' linear layers: an opt-in part of fast mode.

`enable_fp8(dit)` gives every linear layer inside the DiT blocks (attention q/k/v/o, self and
cross, and the MLP) a second path: the input is quantised per row (token) and the weight per
output channel to float8_e4m3fn, multiplied by `torch._scaled_mm` (FP8 tensor cores on Hopper
GPUs, a reference kernel on the CPU) with both scales applied to the output, and the bias added
in the output dtype. The embedders, the adaLN projection and the final layer stay exact. The
weights' FP8 copies are made once and kept beside the model's own weights as non-persistent
buffers (half their bytes again in bf16): the state dict does not change, and they move with
`.to(device)` (a `.to(dtype)` casts them, so they are made again at the next use).

The FP8 path runs only inside `fp8_matmuls()`; outside it the layers run `F.linear` as before,
so exact-mode requests in the same process are untouched. The switch is a module global rather
than a ContextVar because torch.compile guards on globals (one graph per value) where a ContextVar
may break the graph. A worker process never calls its pipeline from two threads at once, so one
process-wide switch is enough.

Numbers: e4m3 keeps 3 mantissa bits, so one random-Gaussian matmul is off by ~3.6 % (relative L2)
against float32; what that costs in prompt adherence is measured on the tiny model in
docs/performance.md ("Fast mode").
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
_ON = False


@contextmanager
def fp8_matmuls(on: bool = True) -> Iterator[None]:
    """Within this block, layers prepared by `enable_fp8` multiply in FP8 (if `on`)."""
    global _ON
    previous, _ON = _ON, on
    try:
        yield
    finally:
        _ON = previous


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (float8_e4m3fn (M, K), float32 scale (M, 1)) with x ≈ x8 * scale row by row."""
    scale = x.detach().abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


def _weight_copy(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 weight (out, in), float32 scale (1, out)) of `linear`, quantised per output channel."""
    w8, scale = quantize_rows(linear.weight.detach())
    return w8, scale.t().contiguous()


def _quantized_weight(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """`_weight_copy(linear)`: the one `enable_fp8` stored, made again if a later `.to(dtype)` cast
    it, or made on the fly for a layer that was never prepared."""
    w8, scale = getattr(linear, "fp8_weight", None), getattr(linear, "fp8_scale", None)
    if w8 is None or w8.dtype != torch.float8_e4m3fn or w8.device != linear.weight.device:
        w8, scale = _weight_copy(linear)
        if hasattr(linear, "fp8_weight"):
            linear.fp8_weight, linear.fp8_scale = w8, scale
    return w8, scale


def fp8_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear(x)` computed with FP8 operands: x (..., in) -> (..., out) in x's dtype."""
    w8, w_scale = _quantized_weight(linear)                    # (out, in), (1, out)
    rows = x.reshape(-1, x.shape[-1])                          # (M, in)
    x8, x_scale = quantize_rows(rows)                          # (M, in), (M, 1)
    out = torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=x.dtype)  # (M, out)
    if linear.bias is not None:
        out = out + linear.bias.to(out.dtype)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def runs_fp8(linear: nn.Linear) -> bool:
    """Whether `linear` multiplies in FP8 now: prepared by `enable_fp8`, inside `fp8_matmuls()`."""
    return _ON and linear.__dict__.get("_fp8_forward", False)


def _forward(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if _ON:
        return fp8_linear(linear, x)
    return F.linear(x, linear.weight, linear.bias)


def enable_fp8(dit: nn.Module) -> int:
    """Prepare the linear layers of `dit.blocks` for `fp8_matmuls()`; idempotent. Returns how many
    layers have the FP8 path. Their in/out sizes must be multiples of 16 (`torch._scaled_mm` on CUDA)."""
    linears = [m for block in dit.blocks for m in block.modules() if isinstance(m, nn.Linear)]
    for module in linears:  # check all before changing any
        if module.in_features % 16 or module.out_features % 16:
            raise ValueError(f"FP8 needs linear sizes in multiples of 16, got {module.in_features} -> {module.out_features}")
    for module in linears:
        if "_fp8_forward" not in module.__dict__:
            w8, scale = _weight_copy(module)
            module.register_buffer("fp8_weight", w8, persistent=False)  # not in the state dict
            module.register_buffer("fp8_scale", scale, persistent=False)
            module.__dict__["_fp8_forward"] = True
            module.forward = _forward.__get__(module)  # bound to this layer only
    return len(linears)
