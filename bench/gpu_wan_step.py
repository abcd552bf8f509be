"""One denoising step of the production shapes on a GPU: VideoDiT at Wan2.1 sizes, bf16, random weights.

Batch 2 (prompt + negative prompt in one forward, as the sampler runs guidance), text at 512 tokens,
native latent size. Prints ms per step and the achieved TFLOP/s from `flops_per_forward`.

    python bench/gpu_wan_step.py [--presets wan2.1-1.3b,wan2.1-14b] [--layers N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.dit import VideoDiT, flops_per_forward  # noqa: E402
from model.presets import get_preset  # noqa: E402


def time_step(name: str, layers: int | None, repeats: int) -> tuple[str, float, float, int]:
    preset = get_preset(name)
    cfg = preset.dit if layers is None else dataclasses.replace(preset.dit, num_layers=layers)
    d = preset.defaults
    latent = ((d.num_frames - 1) // 4 + 1, d.height // 8, d.width // 8)
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly: 14B in fp32 would not fit 80 GB
    try:
        with torch.device("cuda"):
            model = VideoDiT(cfg).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    torch.nn.init.normal_(model.t_projection.weight, std=0.02)  # non-trivial adaLN
    x = torch.randn(2, cfg.in_channels, *latent, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([500.0, 500.0], device="cuda")
    ctx = torch.randn(2, preset.text.max_length, cfg.text_dim, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        model(x, t, ctx, None)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            model(x, t, ctx, None)
        end.record()
        torch.cuda.synchronize()
    ms = start.elapsed_time(end) / repeats
    flops = 2 * flops_per_forward(cfg, latent, preset.text.max_length)
    peak_gb = torch.cuda.max_memory_allocated() / 1e9
    del model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return f"{name} ({cfg.num_layers} layers)", ms, flops / (ms / 1e3) / 1e12, int(peak_gb)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="wan2.1-1.3b,wan2.1-14b")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (scale ms by layers yourself)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, batch 2 (CFG), SDPA backend auto")
    print(f"{'model':<28}{'ms / step':>12}{'TFLOP/s':>10}{'peak GB':>9}")
    for name in args.presets.split(","):
        label, ms, tflops, peak = time_step(name, args.layers, args.repeats)
        print(f"{label:<28}{ms:>12.1f}{tflops:>10.0f}{peak:>9}")


if __name__ == "__main__":
    main()
