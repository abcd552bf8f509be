"""Video VAE decode, tiled against untiled: time and peak memory per clip.

    python bench/vae_decode.py                                   # Wan2.1 VAE, 81 frames, 480p and 720p, CUDA
    python bench/vae_decode.py --device cpu --tiny --sizes 96x64  # script check (sizes are WxH)

The VAE is diffusers' AutoencoderKLWan with random weights at Wan2.1's shape (its defaults), in
float32 as the pipelines run it; `--tiny` uses a small one. The latents are random, normalised
as the pipeline hands them over. Each row is one decode through `model.vae.decode_latents`
(after one warm-up decode of the same shape); peak is the memory allocated during that decode
on top of what was allocated before it (CUDA only). These numbers set how the pipeline chooses
(`model.vae.decode_needs_tiling`: untiled on a GPU while the untiled peak fits in half the free
memory).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.vae import decode_latents, latent_shape  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    """'832x480' -> (832, 480): WxH as the API's sizes (service.catalog's parser needs pydantic,
    which the GPU machines' python lacks)."""
    width, height = text.lower().split("x")
    return int(width), int(height)


def time_decode(vae, latents: torch.Tensor, tiling: bool, device: torch.device) -> tuple[float, float | None]:
    """(seconds, peak GB above the baseline or None off CUDA) of one decode after a warm-up."""
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
    del video
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(832, 480), (1280, 720)],
                        help="WxH, as the API's sizes")
    parser.add_argument("--tiny", action="store_true", help="a small random VAE (script check)")
    args = parser.parse_args()

    from diffusers import AutoencoderKLWan

    device = torch.device(args.device)
    torch.manual_seed(0)
    kw = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if args.tiny else {}
    with torch.device(device):
        vae = AutoencoderKLWan(**kw).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{name}, torch {torch.__version__}, AutoencoderKLWan {'tiny' if args.tiny else 'Wan2.1'} float32, "
          f"{args.frames} frames, random weights")
    print(f"{'WxH':<10} {'decode':<8} {'s / clip':>9} {'peak GB':>8}")
    with torch.inference_mode():
        for width, height in args.sizes:
            shape = (1, vae.config.z_dim, *latent_shape(args.frames, height, width, vae))
            latents = torch.randn(shape, device=device)
            for tiling in (False, True):
                seconds, peak = time_decode(vae, latents, tiling, device)
                peak_text = f"{peak:8.2f}" if peak is not None else f"{'-':>8}"
                print(f"{width}x{height:<6} {'tiled' if tiling else 'untiled':<8} {seconds:9.2f} {peak_text}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
