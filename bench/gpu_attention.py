"""Self-attention's rate at the model's shape: a short burst, a sustained loop, and interleaved with
the MLP's matmul as in the model, with the GPU's SM clock, power and temperature during each.

    python bench/gpu_attention.py                      # B=2, 12 heads, 32,760 tokens, d 128, bf16, cuDNN
    python bench/gpu_attention.py --seconds 30         # longer sustained phases
    python bench/gpu_attention.py --device cpu --tiny  # script check (a test runs this): math backend

The question (docs/performance.md, "GPU: ..."): cuDNN SDPA measured 627 TFLOP/s in isolation at
Wan2.1-1.3B's shape but ~553 TFLOP/s inside the compiled model. The isolated figure is a median of
a few calls right after warm-up; the model runs attention back to back for a minute, between large
matmuls. If the gap is the GPU's clock dropping under sustained load (power or temperature), the
sustained and interleaved phases show it, beside the clock they ran at.

q, k, v are laid out as the model passes them: (B, N, heads*d) projections seen as (B, heads, N, d)
through unflatten + transpose (token-major, strided). Phases, each timed per call with CUDA events
(median TFLOP/s, FLOPs = 4*B*heads*N*N*d):

  burst        3 calls after a warm-up
  sustained    calls back to back for --seconds
  interleaved  each call followed by a bf16 matmul of the MLP up-projection's shape (B*N, heads*d) @
               (heads*d, --ffn), for --seconds; the matmul's own median rate is reported too

The CPU enqueues at most two calls ahead of the GPU, so the loops keep the GPU busy without a
queue of minutes. While a phase runs, `nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu
-lms 200` samples the GPU in the background (median clock and power, highest temperature per
phase); without nvidia-smi those columns are left out.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


@dataclass
class Shape:
    batch: int
    heads: int
    tokens: int
    head_dim: int
    ffn: int

    @property
    def attention_flops(self) -> int:
        return 4 * self.batch * self.heads * self.tokens**2 * self.head_dim

    @property
    def matmul_flops(self) -> int:
        return 2 * self.batch * self.tokens * self.heads * self.head_dim * self.ffn


@dataclass
class Phase:
    name: str
    attention_ms: list[float] = field(default_factory=list)
    matmul_ms: list[float] = field(default_factory=list)
    start: float = 0.0  # time.monotonic() window, for the GPU samples
    end: float = 0.0


class GPUSampler:
    """`nvidia-smi -lms 200` in the background: (monotonic time, SM MHz, W, °C) per sample."""

    QUERY = "clocks.sm,power.draw,temperature.gpu"

    def __init__(self, device: torch.device):
        self.samples: list[tuple[float, float, float, float]] = []
        self.process = None
        if device.type != "cuda" or shutil.which("nvidia-smi") is None:
            return
        command = ["nvidia-smi", f"--query-gpu={self.QUERY}", "--format=csv,noheader,nounits", "-lms", "200"]
        uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
        if uuid:  # the GPU torch uses, whatever CUDA_VISIBLE_DEVICES maps it to
            command += ["-i", uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"]
        elif torch.cuda.device_count() > 1:
            return  # which of several GPUs is ours is unknown: no columns rather than wrong ones
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def running(self) -> bool:
        return self.process is not None

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                clock, power, temperature = (float(part) for part in line.split(","))
            except ValueError:  # "[N/A]" or a partial line
                continue
            self.samples.append((time.monotonic(), clock, power, temperature))

    def during(self, phase: Phase) -> tuple[float, float, float] | None:
        """(median SM MHz, median W, highest °C) of the samples taken while `phase` ran."""
        inside = [s for s in self.samples if phase.start <= s[0] <= phase.end]
        if not inside:
            return None
        return (statistics.median(s[1] for s in inside), statistics.median(s[2] for s in inside),
                max(s[3] for s in inside))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Timer:
    """Per-call milliseconds: CUDA events on a GPU (read at the end), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[list[float], object, object]] = []

    def time(self, fn, into: list[float]):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            self.pending.append((into, start, end))
            if len(self.pending) > 2:  # at most two calls ahead of the GPU
                self.pending[-3][2].synchronize()
            return
        start = time.perf_counter()
        fn()
        into.append((time.perf_counter() - start) * 1e3)

    def finish(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            for into, start, end in self.pending:
                into.append(start.elapsed_time(end))
            self.pending.clear()


def model_layout_qkv(shape: Shape, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """q, k, v (B, heads, N, d) as views of (B, N, heads*d) tensors: the model's layout."""
    g = torch.Generator(device).manual_seed(0)
    return tuple(
        torch.randn(shape.batch, shape.tokens, shape.heads * shape.head_dim, generator=g, device=device, dtype=dtype)
        .unflatten(-1, (shape.heads, shape.head_dim)).transpose(1, 2)
        for _ in range(3))


def run_phases(shape: Shape, device: torch.device, dtype: torch.dtype, seconds: float, warmup: int,
               sampler: GPUSampler) -> list[Phase]:
    q, k, v = model_layout_qkv(shape, device, dtype)
    rows = shape.batch * shape.tokens
    a = torch.randn(rows, shape.heads * shape.head_dim, device=device, dtype=dtype)  # (B*N, D)
    b = torch.randn(shape.heads * shape.head_dim, shape.ffn, device=device, dtype=dtype)  # (D, ffn)
    attend = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    matmul = lambda: a @ b  # noqa: E731
    timer = Timer(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    for _ in range(warmup):
        attend()
        matmul()
    sync()
    phases = []
    for name in ("burst", "sustained", "interleaved"):
        phase = Phase(name)
        phase.start = time.monotonic()
        if name == "burst":
            for _ in range(3):
                timer.time(attend, phase.attention_ms)
        else:
            while time.monotonic() - phase.start < seconds:
                timer.time(attend, phase.attention_ms)
                if name == "interleaved":
                    timer.time(matmul, phase.matmul_ms)
        timer.finish()
        phase.end = time.monotonic()
        phases.append(phase)
        if sampler.running:
            time.sleep(0.3)  # let the last sample of the phase arrive before the next one starts
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="a tiny shape in float32 on the math backend (script check)")
    parser.add_argument("--batch", type=int, default=2, help="the guided pair as one batch, as the pipeline runs it")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=32_760, help="81 frames 480x832: latent 21x60x104 in 1x2x2 patches")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=8960, help="MLP hidden width of the interleaved matmul")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the sustained and interleaved phases")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu --tiny")
        return 2
    if args.tiny:
        torch.set_num_threads(1)  # tiny tensors: one thread is faster and immune to a busy machine
        shape, seconds = Shape(batch=1, heads=2, tokens=256, head_dim=32, ffn=256), min(args.seconds, 1.0)
    else:
        shape, seconds = Shape(args.batch, args.heads, args.tokens, args.head_dim, args.ffn), args.seconds
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backend = SDPBackend.CUDNN_ATTENTION if device.type == "cuda" else SDPBackend.MATH

    sampler = GPUSampler(device)
    try:
        with torch.inference_mode(), sdpa_kernel(backend):
            phases = run_phases(shape, device, dtype, seconds, args.warmup, sampler)
    finally:
        sampler.stop()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{name}, torch {torch.__version__}, SDPA {backend.name}, {str(dtype).removeprefix('torch.')}, "
          f"B={shape.batch} heads={shape.heads} N={shape.tokens} d={shape.head_dim}, q/k/v token-major strided, "
          f"interleaved matmul ({shape.batch * shape.tokens}x{shape.heads * shape.head_dim} @ "
          f"{shape.heads * shape.head_dim}x{shape.ffn})")
    if device.type == "cuda" and not sampler.running:
        print("(no nvidia-smi, or several GPUs and no UUID for ours: no clock, power and temperature columns)")
    clocks = sampler.running
    header = f"{'phase':<12} {'calls':>6} {'ms / call':>10} {'TFLOP/s':>8} {'min-max TFLOP/s':>16} {'matmul TFLOP/s':>15}"
    print(header + (f" {'SM MHz':>7} {'power W':>8} {'max °C':>7}" if clocks else ""))
    for phase in phases:
        ms = statistics.median(phase.attention_ms)
        rates = [shape.attention_flops / (t * 1e-3) / 1e12 for t in phase.attention_ms]
        matmul = (f"{shape.matmul_flops / (statistics.median(phase.matmul_ms) * 1e-3) / 1e12:15.3g}"
                  if phase.matmul_ms else f"{'-':>15}")
        spread = f"{min(rates):.3g}-{max(rates):.3g}"
        line = (f"{phase.name:<12} {len(phase.attention_ms):>6} {ms:>10.2f} "
                f"{shape.attention_flops / (ms * 1e-3) / 1e12:>8.3g} {spread:>16} {matmul}")
        if clocks:
            gpu = sampler.during(phase)
            line += f" {gpu[0]:>7.0f} {gpu[1]:>8.0f} {gpu[2]:>7.0f}" if gpu else f" {'-':>7} {'-':>8} {'-':>7}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
