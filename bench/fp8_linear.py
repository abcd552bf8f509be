"""One DiT linear layer in bf16 against the FP8 path of model/fp8.py, piece by piece.

    python bench/fp8_linear.py                     # wan2.1-1.3b's block linears at 81 frames 480x832, guided pair
    python bench/fp8_linear.py --device cpu --tiny # small shapes: checks the script runs (a test runs this)

Why: fast mode with FP8 linears ran slower than without on an H200 (docs/performance.md). This
splits one `fp8_linear` call into its parts at the model's shapes: the bf16 matmul it replaces,
the whole FP8 path (eager and compiled), the input quantisation alone, and `torch._scaled_mm`
alone with row-wise scales (what model/fp8.py uses) and with one scale per tensor.
Rows: median milliseconds per call (CUDA events on the GPU, wall time on the CPU), TFLOP/s, and
speed against the exact path (bf16 on the GPU, float32 on the CPU).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.gpu_dit import time_cuda  # noqa: E402
from model.fp8 import E4M3_MAX, fp8_linear, quantize_rows  # noqa: E402
from model.presets import get_preset  # noqa: E402


def timed(fn, device: str, iters: int, warmup: int) -> float:
    """Median milliseconds of fn() over iters calls after warmup calls (CUDA events on the GPU)."""
    if device == "cuda":
        return time_cuda(fn, iters, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def shapes(tiny: bool) -> tuple[int, list[tuple[str, int, int]]]:
    """(tokens M, [(name, in, out)]) of the block linears: the guided pair's tokens at the default clip."""
    if tiny:
        return 256, [("attention projection", 64, 64), ("MLP up", 64, 128), ("MLP down", 128, 64)]
    preset = get_preset("wan2.1-1.3b")
    c, d = preset.dit, preset.defaults
    tokens = ((d.num_frames - 1) // 4 + 1) * (d.height // 16) * (d.width // 16)  # patch 1x2x2 on 8x latents
    return 2 * tokens, [("attention projection", c.dim, c.dim), ("MLP up", c.dim, c.ffn_dim), ("MLP down", c.ffn_dim, c.dim)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small shapes (script check)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu --tiny")
        return 2
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    tokens, layers = shapes(args.tiny)
    compiled_fp8 = None if args.no_compile or args.device == "cpu" else torch.compile(fp8_linear)
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    print(f"{name}, torch {torch.__version__}, {tokens} tokens, {dtype}, median of {args.iters}")
    print(f"{'layer':22} {'in':>6} {'out':>6} {'run':38} {'ms':>8} {'TFLOP/s':>8} {'vs exact':>8}")
    torch.manual_seed(0)
    for layer_name, k, n in layers:
        linear = nn.Linear(k, n, device=args.device, dtype=dtype)
        x = torch.randn(tokens, k, device=args.device, dtype=dtype)
        x8, x_scale = quantize_rows(x)
        w8, w_scale = quantize_rows(linear.weight.detach())
        w_scale = w_scale.t().contiguous()
        one = torch.ones((), device=args.device)
        x_tensor_scale = (x.abs().amax().float() / E4M3_MAX).reshape(())
        x8_tensor = (x.float() / x_tensor_scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        runs = [("F.linear (the exact path)", lambda: linear(x)),
                ("FP8 path, eager (model/fp8.fp8_linear)", lambda: fp8_linear(linear, x))]
        if compiled_fp8 is not None:
            runs.append(("FP8 path, compiled", lambda: compiled_fp8(linear, x)))
        runs += [("  input quantisation alone", lambda: quantize_rows(x)),
                 ("  _scaled_mm alone, row-wise scales", lambda: torch._scaled_mm(
                     x8, w8.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=dtype)),
                 ("  _scaled_mm alone, one scale per tensor", lambda: torch._scaled_mm(
                     x8_tensor, w8.t(), scale_a=x_tensor_scale, scale_b=one, out_dtype=dtype))]
        flops = 2 * tokens * k * n
        base = None
        for run, fn in runs:
            try:
                ms = timed(fn, args.device, args.iters, args.warmup)
            except (RuntimeError, NotImplementedError) as err:  # e.g. a scaling mode this build lacks
                print(f"{layer_name:22} {k:>6} {n:>6} {run:38} failed: {str(err).splitlines()[0][:60]}")
                continue
            base = ms if base is None else base
            rate = "" if run.startswith("  input") else f"{flops / ms / 1e9:.0f}"
            ratio = base / ms  # two decimals, or two digits when smaller (the CPU's reference kernels)
            print(f"{layer_name:22} {k:>6} {n:>6} {run:38} {ms:>8.3f} {rate:>8} "
                  f"{f'{ratio:.2f}' if ratio >= 0.01 else f'{ratio:.1e}':>7}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
