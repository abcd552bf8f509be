"""Training throughput of the tiny preset: VAE and DiT + text-encoder steps/s per batch size
(eager steps, VAE encode inside the DiT step: the worst case `spacetime train` improves on).

    python bench/train_throughput.py --device cuda --seconds 10

Prints one table: stage, clips per batch (17 frames at 128x128 equivalent), steps/s, clips/s,
peak memory. Used to size `spacetime train --vae-voxels / --dit-voxels` for a time budget.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data.buckets import ShapesWorldStream, all_buckets  # noqa: E402
from model.pipeline import TextToVideoPipeline  # noqa: E402
from model.sampling import flow_matching_loss  # noqa: E402
from model.train import TrainConfig, autocast, vae_loss  # noqa: E402
from model.vae import encode_video  # noqa: E402

UNIT = 17 * 128 * 128  # voxels of one 2-second 128x128 clip


def time_loop(step, seconds: float, device: torch.device) -> float:
    for _ in range(3):  # warm-up: kernels, allocator, cuDNN autotune
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--vae-clips", type=float, nargs="+", default=[8, 16])
    parser.add_argument("--dit-clips", type=float, nargs="+", default=[32, 64])
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = TrainConfig(device=args.device)
    pipe = TextToVideoPipeline.from_preset("spacetime-tiny", device=device, dtype=torch.float32)
    rows = []
    for clips in args.vae_clips:
        stream = ShapesWorldStream(int(clips * UNIT), 0, device, all_buckets(frame_counts=(cfg.vae_frames,)))
        data = stream.prefetched(args.workers)
        opt = torch.optim.AdamW(pipe.vae.parameters(), lr=1e-4)
        pipe.vae.train()

        def vae_step():
            with autocast(device):
                loss, _ = vae_loss(pipe.vae, next(data).video, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()

        torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
        rate = time_loop(vae_step, args.seconds, device)
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        rows.append(("vae", clips, rate, mem))
    pipe.vae.eval().requires_grad_(False)
    net = torch.nn.ModuleList([pipe.transformer, pipe.text_encoder]).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    for clips in args.dit_clips:
        data = ShapesWorldStream(int(clips * UNIT), 0, device).prefetched(args.workers)

        def dit_step():
            batch = next(data)
            with autocast(device):
                with torch.no_grad():
                    latents = encode_video(pipe.vae, batch.video, sample=False).float()
                states, mask = pipe.text_encoder(*pipe.text_encoder.tokenize(batch.captions, device))
                loss = flow_matching_loss(pipe.transformer, latents, states, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()

        torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
        rate = time_loop(dit_step, args.seconds, device)
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        rows.append(("dit+text", clips, rate, mem))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\ntraining throughput on {name} (clip = 17 frames at 128x128; buckets mixed)")
    print(f"{'stage':<9} {'clips/batch':>11} {'steps/s':>8} {'clips/s':>8} {'peak GiB':>9}")
    for stage, clips, rate, mem in rows:
        print(f"{stage:<9} {clips:>11.1f} {rate:>8.2f} {rate * clips:>8.1f} {mem:>9.2f}")


if __name__ == "__main__":
    main()
