"""Prompt -> MP4 on the CPU with the tiny preset: a 2 s 128x128 clip (17 frames at 8 fps).

Times each stage (text encode, denoise, VAE decode, MP4 encode), the whole call, and the whole
call in fast mode (`mode="fast"`: model/step_cache.py's defaults), median of
--repeats runs after one warm-up, with torch.inference_mode and intra-op threads = available cores
(override with --threads). Prints a table.

    .venv/bin/python bench/cpu_tiny.py [--threads N] [--repeats 3] [--steps 20] [--guidance 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.pipeline import load_pipeline  # noqa: E402
from model.sampling import sample_latents  # noqa: E402
from model.vae import decode_latents, latent_shape, to_uint8_frames  # noqa: E402
from workers.media import encode_mp4  # noqa: E402

PROMPT, NEGATIVE = "a red circle moving left", ""
FRAMES, HEIGHT, WIDTH, FPS = 17, 128, 128, 8


def run_once(pipe, steps: int, guidance: float, out: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    states, mask = pipe.text_encoder.encode([PROMPT, NEGATIVE])
    t1 = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    shape = (1, pipe.vae.config.z_dim, *latent_shape(FRAMES, HEIGHT, WIDTH, pipe.vae))
    latents = sample_latents(pipe.transformer, shape, (states[:1], mask[:1]), (states[1:], mask[1:]), steps,
                             guidance, generator, scheduler=pipe.defaults.scheduler, shift=pipe.defaults.shift)
    t2 = time.perf_counter()
    frames = to_uint8_frames(decode_latents(pipe.vae, latents)[0])
    t3 = time.perf_counter()
    encode_mp4(frames, out, fps=FPS)
    t4 = time.perf_counter()
    times.update({"text encode": t1 - t0, "denoise": t2 - t1, "VAE decode": t3 - t2, "MP4 encode": t4 - t3})
    # the same work through the public call, as a worker runs it
    t5 = time.perf_counter()
    frames = pipe(PROMPT, NEGATIVE, num_frames=FRAMES, height=HEIGHT, width=WIDTH, fps=FPS,
                  num_inference_steps=steps, guidance_scale=guidance, seed=0)
    encode_mp4(frames, out, fps=FPS)
    times["total (pipe() + MP4)"] = time.perf_counter() - t5
    # and in fast mode ("quality": "fast"), as a worker runs a fast job
    t6 = time.perf_counter()
    frames = pipe(PROMPT, NEGATIVE, num_frames=FRAMES, height=HEIGHT, width=WIDTH, fps=FPS,
                  num_inference_steps=steps, guidance_scale=guidance, seed=0, mode="fast")
    encode_mp4(frames, out, fps=FPS)
    times["total, fast mode"] = time.perf_counter() - t6
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--model", default="spacetime-tiny")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline(args.model)
    runs = []
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        run_once(pipe, args.steps, args.guidance, Path(tmp) / "warmup.mp4")
        for i in range(args.repeats):
            runs.append(run_once(pipe, args.steps, args.guidance, Path(tmp) / f"{i}.mp4"))
    weights = "random weights" if pipe.is_random_weights else "trained weights"
    print(f"\n{args.model} ({weights}), {FRAMES} frames {WIDTH}x{HEIGHT} @ {FPS} fps, {args.steps} steps, "
          f"guidance {args.guidance} (CFG batched), {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.repeats}")
    print(f"{'stage':<24}{'median s':>10}{'min s':>10}")
    for stage in runs[0]:
        values = [r[stage] for r in runs]
        print(f"{stage:<24}{statistics.median(values):>10.2f}{min(values):>10.2f}")


if __name__ == "__main__":
    main()
