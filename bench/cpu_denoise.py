"""The tiny preset's denoise loop on the CPU: threads, grad modes and torch.compile.

Times `sample_latents` (20 steps, guidance batched, 17 frames 128x128 -> 320 tokens) with the
shipped tiny weights, for each variant: intra-op threads, `torch.no_grad` vs
`torch.inference_mode`, eager vs `torch.compile` (regional: each block, as bench/gpu_dit.py;
and the whole DiT). Compile time is the first call's extra time over an eager call. Median and
min of --repeats runs after that first call. Prints a table.

    .venv/bin/python bench/cpu_denoise.py [--repeats 5] [--threads 1 2] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.pipeline import load_pipeline  # noqa: E402
from model.sampling import sample_latents  # noqa: E402
from model.vae import latent_shape  # noqa: E402

FRAMES, HEIGHT, WIDTH, STEPS, GUIDANCE = 17, 128, 128, 20, 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline("spacetime-tiny")
    states, mask = pipe.text_encoder.encode(["a red circle moving left", ""])
    cond, uncond = (states[:1], mask[:1]), (states[1:], mask[1:])
    shape = (1, pipe.vae.config.z_dim, *latent_shape(FRAMES, HEIGHT, WIDTH, pipe.vae))

    def denoise(model) -> float:
        t0 = time.perf_counter()
        sample_latents(model, shape, cond, uncond, STEPS, GUIDANCE, torch.Generator().manual_seed(0),
                       scheduler=pipe.defaults.scheduler, shift=pipe.defaults.shift)
        return time.perf_counter() - t0

    eager = pipe.transformer
    regional = copy.deepcopy(eager)
    for i, block in enumerate(regional.blocks):
        regional.blocks[i] = torch.compile(block)
    variants = [("eager, no_grad", eager, torch.no_grad), ("eager, inference_mode", eager, torch.inference_mode)]
    if not args.no_compile:
        variants += [("compiled blocks, inference_mode", regional, torch.inference_mode),
                     ("compiled whole DiT, inference_mode", torch.compile(copy.deepcopy(eager)), torch.inference_mode)]

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            eager_first = denoise(eager)
        for name, model, mode in variants:
            with mode():
                first = denoise(model)
                times = [denoise(model) for _ in range(args.repeats)]
            rows.append((threads, name, statistics.median(times), min(times), max(first - eager_first, 0.0)))
            print(f"  {threads} thread(s), {name}: median {rows[-1][2]:.2f} s", flush=True)

    print(f"\n# spacetime-tiny denoise: {STEPS} steps, CFG batched, {FRAMES} frames {WIDTH}x{HEIGHT} "
          f"(latent {shape[2:]}), torch {torch.__version__}, median/min of {args.repeats}")
    print("| threads | variant | median s | min s | first-call overhead s |")
    print("|---:|---|---:|---:|---:|")
    for threads, name, med, low, overhead in rows:
        print(f"| {threads} | {name} | {med:.2f} | {low:.2f} | {overhead:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
