"""One GPU vs N GPUs for one video: per-forward time, VAE decode time, speedup and efficiency.

VideoDiT at Wan2.1 shapes with random weights built directly in bf16 on each GPU (14B would not
fit in fp32), text states random at 512 tokens, batch 2 (prompt + negative prompt, guidance 5).
N ranks run `ParallelVideoDiT` (model/parallel.py): guidance 2 x sequence N/2 when N is even
(`--no-cfg-parallel`: sequence N), NCCL with NVLS off. The decode is a random Wan-shaped VAE,
tiled, split over the ranks by tiles (model/parallel_pipeline.py); the text encoder is left out.

Whole video = `--steps` guided forwards + one decode. With `--video measure` it is timed as one
run (sampler included); with `--video estimate` (the default: a 14B 720p video takes many
minutes on one GPU) it is steps x the per-forward time + the timed decode, and with `--layers`
the per-forward time is first scaled to the preset's full depth (layers cost the same each).

    python bench/multigpu.py [--gpus N] [--presets wan2.1-1.3b,wan2.1-14b] [--sizes 480p,720p]
                             [--frames 81] [--steps 50] [--layers L] [--repeats 3] [--video estimate|measure]
    python bench/multigpu.py --device cpu --tiny      # gloo, the tiny preset: checks the script runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from model.dit import VideoDiT  # noqa: E402
from model.parallel import ParallelVideoDiT, make_mesh, run_ranks  # noqa: E402
from model.parallel_pipeline import decode_latents_parallel  # noqa: E402
from model.presets import get_preset  # noqa: E402
from model.sampling import guided_velocity, sample_latents  # noqa: E402
from model.vae import build_vae, decode_latents  # noqa: E402

SIZES = {"480p": (480, 832), "720p": (720, 1280), "tiny": (64, 64)}  # (height, width) in pixels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _case(rank: int, world_size: int, spec: dict, out_path: str) -> None:
    """One (preset, size) case on world_size ranks; rank 0 writes ms per forward and video seconds."""
    cuda = spec["device"] == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if not cuda:
        torch.set_num_threads(1)
    preset = get_preset(spec["preset"])
    cfg = preset.dit if spec["layers"] is None else dataclasses.replace(preset.dit, num_layers=spec["layers"])
    height, width = SIZES[spec["size"]]
    latent = ((spec["frames"] - 1) // 4 + 1, height // 8, width // 8)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # build in bf16 directly, on the device
    try:
        with device:
            dit = VideoDiT(cfg).eval()
            vae = build_vae(preset.vae).float() if spec["decode"] else None
    finally:
        torch.set_default_dtype(torch.float32)
    torch.nn.init.normal_(dit.t_projection.weight, std=0.02)  # non-trivial adaLN
    model = dit
    if world_size > 1:
        model = ParallelVideoDiT(dit, make_mesh(cfg_size=2 if spec["cfg_parallel"] and world_size % 2 == 0 else 1))
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, cfg.in_channels, *latent, generator=g, device=device)
    text_len = preset.text.max_length
    states = torch.randn(2, text_len, cfg.text_dim, generator=g, device=device, dtype=dtype)
    cond, uncond = (states[:1], None), (states[1:], None)
    t = torch.tensor([500.0], device=device)
    with torch.inference_mode():
        # 1. Per forward (batch 2: the guided pair), after one warm-up.
        guided_velocity(model, x, t, cond, uncond, 5.0)
        _sync(device)
        if world_size > 1:
            dist.barrier()
        started = time.perf_counter()
        for _ in range(spec["repeats"]):
            guided_velocity(model, x, t, cond, uncond, 5.0)
        _sync(device)
        ms = (time.perf_counter() - started) / spec["repeats"] * 1e3
        def timed(work) -> float:
            """Seconds of `work()` then a decode of its latents (tile-parallel over the ranks)."""
            if world_size > 1:
                dist.barrier()
            started = time.perf_counter()
            latents = work()
            if world_size > 1:
                decode_latents_parallel(vae, latents, dist.group.WORLD)
            else:
                decode_latents(vae, latents, tiling=True)
            _sync(device)
            return time.perf_counter() - started

        # 2. The VAE decode alone, after one warm-up.
        decode_s = video_s = None
        if spec["decode"]:
            vae.enable_tiling()
            noise = torch.randn(x.shape, generator=g, device=device)
            decode_s = [timed(lambda: noise) for _ in range(2)][-1]
        # 3. The whole video timed in one run: denoising steps + decode.
        if spec["video"] == "measure" and spec["steps"]:
            video_s = timed(lambda: sample_latents(model, tuple(x.shape), cond, uncond, spec["steps"], 5.0,
                                                   torch.Generator(device).manual_seed(1),
                                                   shift=preset.defaults.shift))
    if rank == 0:
        peak_gb = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else 0.0
        Path(out_path).write_text(json.dumps({"ms": ms, "decode_s": decode_s, "video_s": video_s,
                                              "peak_gb": peak_gb, "full_layers": preset.dit.num_layers,
                                              "layers": cfg.num_layers}))


def whole_video_s(r: dict, steps: int) -> float | None:
    """Measured whole-video seconds, else steps x per-forward (scaled to full depth) + decode."""
    if r["video_s"] is not None:
        return r["video_s"]
    if r["decode_s"] is None:
        return None
    return steps * r["ms"] / 1e3 * r["full_layers"] / r["layers"] + r["decode_s"]


def measure(spec: dict, world_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        run_ranks(_case, world_size, spec, out, backend="nccl" if spec["device"] == "cuda" else "gloo")
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=None, help="ranks to compare with one (default: all GPUs; 2 on the CPU)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="spacetime-tiny at 64x64, 9 frames, 2 steps (script check)")
    parser.add_argument("--presets", default="wan2.1-1.3b,wan2.1-14b")
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=50, help="denoising steps of the whole video")
    parser.add_argument("--layers", type=int, default=None, help="fewer DiT layers (times scaled to full depth)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video", choices=("estimate", "measure"), default="estimate",
                        help="whole video: steps x forward + decode, or timed as one run")
    parser.add_argument("--no-decode", action="store_true", help="skip the VAE (per-forward times only)")
    parser.add_argument("--no-cfg-parallel", action="store_true")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.tiny:
        args.presets, args.sizes, args.frames, args.steps = "spacetime-tiny", "tiny", 9, min(args.steps, 2)
        args.video = "measure"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --tiny to check the script")
    gpus = args.gpus or (torch.cuda.device_count() if args.device == "cuda" else 2)
    if gpus < 2:
        sys.exit(f"need at least 2 ranks to compare, got {gpus}")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (gloo)"
    cfg_size = 1 if args.no_cfg_parallel or gpus % 2 else 2
    mode = f"guidance {cfg_size} x sequence {gpus // cfg_size}"
    video = "measured" if args.video == "measure" else "estimated"
    print(f"{where}, torch {torch.__version__}, {gpus} ranks ({mode}), {args.frames} frames, "
          f"layers {args.layers or 'all'}; whole video = {args.steps} guided steps + decode, {video}")
    header = (f"{'model':<16}{'size':<6}{'ranks':>6}{'ms/fwd':>10}{'speedup':>9}{'eff.':>7}"
              f"{'decode s':>10}{'speedup':>9}{'video s':>10}{'speedup':>9}{'eff.':>7}{'peak GB':>9}")
    print(header)
    rows = []
    for preset in args.presets.split(","):
        for size in args.sizes.split(","):
            spec = dict(device=args.device, preset=preset, size=size, frames=args.frames, steps=args.steps,
                        layers=args.layers, repeats=args.repeats, cfg_parallel=not args.no_cfg_parallel,
                        decode=not args.no_decode, video=args.video)
            base = measure(spec, 1)
            for ranks, r in ((1, base), (gpus, measure(spec, gpus))):
                fwd_speedup = base["ms"] / r["ms"]
                line = f"{preset:<16}{size:<6}{ranks:>6}{r['ms']:>10.1f}{fwd_speedup:>9.2f}{fwd_speedup / ranks:>7.0%}"
                if r["decode_s"] is not None:
                    line += f"{r['decode_s']:>10.2f}{base['decode_s'] / r['decode_s']:>9.2f}"
                else:
                    line += f"{'-':>10}{'-':>9}"
                video_s, base_video_s = whole_video_s(r, args.steps), whole_video_s(base, args.steps)
                if video_s is not None:
                    line += f"{video_s:>10.1f}{base_video_s / video_s:>9.2f}{base_video_s / video_s / ranks:>7.0%}"
                else:
                    line += f"{'-':>10}{'-':>9}{'-':>7}"
                print(line + f"{r['peak_gb']:>9.1f}", flush=True)
                rows.append(dict(preset=preset, size=size, ranks=ranks, whole_video_s=video_s, **r))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=where, torch=torch.__version__, mode=mode,
                                                   frames=args.frames, steps=args.steps, rows=rows), indent=1))


if __name__ == "__main__":
    main()
