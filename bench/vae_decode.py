"""Video VAE decode, tiled against untiled and float32 against bfloat16: time, peak memory, PSNR.

    python bench/vae_decode.py                                   # Wan2.1 VAE, 81 frames, 480p and 720p, CUDA
    python bench/vae_decode.py --sizes 832x480 --dtype float32,bfloat16 --cudnn-benchmark
    python bench/vae_decode.py --device cpu --tiny --sizes 96x64  # script check (sizes are WxH)
    python bench/vae_decode.py --device cpu --vae model/weights/spacetime-tiny/vae --frames 17 \\
        --sizes 128x128 160x96 96x160 --dtype float32,bfloat16   # the trained tiny VAE on real clips

The VAE is diffusers' AutoencoderKLWan with random weights at Wan2.1's shape (its defaults), in
float32 as the pipelines run it; `--tiny` uses a small one, `--vae FOLDER` a trained one. The
latents are random, normalised as the pipeline hands them over; with `--vae` they are a
shapes-world clip (model/data/shapes.py, one seeded scene per size) encoded by that VAE's encoder
(posterior mean), so the decode sees latents like the ones it was trained on. Each row is one
decode through `model.vae.decode_latents` (after one warm-up decode of the same shape) with the
VAE cast to the row's dtype; peak is the memory allocated during that decode on top of what was
allocated before it (CUDA only). "PSNR vs float32" compares the row's uint8 frames with the
float32 decode's of the same latents and tiling: what decoding in another dtype changes; "PSNR vs
source" (`--vae` only) compares them with the clip that was encoded, the VAE's own round-trip
error for scale. `--cudnn-benchmark` sets `torch.backends.cudnn.benchmark` (cuDNN times its
convolution algorithms at the warm-up decode and keeps the fastest).

These numbers set how the pipeline chooses (`model.vae.decode_needs_tiling`: untiled on a GPU
while the untiled peak fits in half the free memory) and whether it may decode in bf16.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.fast_mode import psnr  # noqa: E402 (uint8 frames against uint8 frames)
from model.vae import (decode_latents, encode_video, from_uint8_frames, latent_shape, load_vae,  # noqa: E402
                       to_uint8_frames, use_fast_cpu_kernels)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_size(text: str) -> tuple[int, int]:
    """'832x480' -> (832, 480): WxH as the API's sizes (service.catalog's parser needs pydantic,
    which the GPU machines' python lacks)."""
    width, height = text.lower().split("x")
    return int(width), int(height)


def parse_dtypes(text: str) -> list[str]:
    """'bfloat16,float32' -> ['float32', 'bfloat16']: float32 first, the reference the others meet."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(DTYPES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"dtypes from {', '.join(DTYPES)}, got {text!r}")
    return sorted(dict.fromkeys(names), key=lambda name: name != "float32")


def time_decode(vae, latents: torch.Tensor, tiling: bool, device: torch.device) -> tuple[float, float | None, np.ndarray]:
    """(seconds, peak GB above the baseline or None off CUDA, uint8 frames (T, H, W, 3)) of one
    decode after a warm-up."""
    decode_latents(vae, latents, tiling=tiling)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    video = decode_latents(vae, latents, tiling=tiling)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated(device) - base) / 1e9 if device.type == "cuda" else None
    return seconds, peak, to_uint8_frames(video[0])


def shapes_clip(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A two-object shapes-world clip, uint8 (T, H, W, 3), deterministic in `seed`."""
    from model.data.shapes import render_clip, sample_scene

    scene = sample_scene(np.random.default_rng(seed), num_objects=2)
    return render_clip(scene, seed, height=height, width=width, num_frames=num_frames)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(832, 480), (1280, 720)],
                        help="WxH, as the API's sizes")
    parser.add_argument("--tiny", action="store_true", help="a small random VAE (script check)")
    parser.add_argument("--vae", type=Path, default=None,
                        help="a trained VAE folder; latents are encoded shapes-world clips")
    parser.add_argument("--dtype", type=parse_dtypes, default=["float32"],
                        help="comma-separated decode dtypes: float32, bfloat16, float16 (default float32)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    args = parser.parse_args()
    if args.tiny and args.vae:
        parser.error("--tiny and --vae choose different VAEs: pick one")

    from diffusers import AutoencoderKLWan

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(0)
    if args.vae is not None:
        vae, what = load_vae(args.vae, device=device), f"trained ({args.vae})"
    else:
        kw = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if args.tiny else {}
        with torch.device(device):
            vae = AutoencoderKLWan(**kw).eval()
        what = f"{'tiny' if args.tiny else 'Wan2.1'}, random weights"
    use_fast_cpu_kernels(vae)  # as the pipeline runs it (CPU float32 only; same numbers)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{name}, torch {torch.__version__}, AutoencoderKLWan {what}, {args.frames} frames, "
          f"cudnn.benchmark {args.cudnn_benchmark}, latents {'encoded shapes clips' if args.vae else 'random'}")
    print(f"{'WxH':<10} {'dtype':<9} {'decode':<8} {'s / clip':>9} {'peak GB':>8} {'PSNR vs float32':>16}"
          f" {'PSNR vs source':>15}")
    with torch.inference_mode():
        for index, (width, height) in enumerate(args.sizes):
            vae.to(torch.float32)
            source = None
            if args.vae is not None:
                source = shapes_clip(args.frames, height, width, seed=index)
                latents = encode_video(vae, from_uint8_frames(source, device)[None], sample=False)
            else:
                shape = (1, vae.config.z_dim, *latent_shape(args.frames, height, width, vae))
                latents = torch.randn(shape, device=device)
            reference: dict[bool, np.ndarray] = {}  # float32 frames per tiling
            for dtype in args.dtype:
                vae.to(DTYPES[dtype])
                for tiling in (False, True):
                    seconds, peak, frames = time_decode(vae, latents, tiling, device)
                    if dtype == "float32":
                        reference[tiling] = frames
                    peak_text = f"{peak:8.2f}" if peak is not None else f"{'-':>8}"
                    vs_float = f"{psnr(frames, reference[tiling]):16.1f}" if dtype != "float32" and reference else f"{'-':>16}"
                    vs_source = f"{psnr(frames, source):15.1f}" if source is not None else f"{'-':>15}"
                    print(f"{f'{width}x{height}':<10} {dtype:<9} {'tiled' if tiling else 'untiled':<8} {seconds:9.2f} "
                          f"{peak_text} {vs_float} {vs_source}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
