"""Fast mode against exact mode on the CPU with the tiny preset: speed, work skipped, PSNR.

For each prompt of a shapes-world prompt set (model/eval.py's canonical captions), generates the
clip in exact mode and in each fast setting with the same seed, and reports per setting:
wall time of the pipeline call (median over prompts), the transformer work done (block-rows: how
many (sample, block) pairs ran, counted with forward hooks; exact = steps x 2 x layers), the share
of forwards served by the step cache, and PSNR of the fast frames against the exact frames
(mean and worst over prompts). The tiny model is undertrained, so prompt-adherence scores from the
shapes evaluator mean nothing yet; PSNR against exact is the quality measure here.

    .venv/bin/python bench/fast_mode.py [--prompts 8] [--steps 20] [--threads 1]
    .venv/bin/python bench/fast_mode.py --grid       # also a small threshold x window sweep
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.eval import build_prompt_set  # noqa: E402
from model.pipeline import load_pipeline  # noqa: E402
from model.step_cache import FastSampling  # noqa: E402

FRAMES, HEIGHT, WIDTH = 17, 128, 128


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", action="store_true", help="sweep cache thresholds and guidance windows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_pipeline("spacetime-tiny")
    rows_run = [0]
    for block in pipe.transformer.blocks:
        block.register_forward_hook(lambda mod, inp, out: rows_run.__setitem__(0, rows_run[0] + inp[0].shape[0]))
    cases = build_prompt_set(num_seen=args.prompts - args.prompts // 4, num_heldout=0, num_pairs=args.prompts // 4)

    settings: list[tuple[str, FastSampling | None]] = [("exact", None), ("fast (default)", FastSampling())]
    if args.grid:
        for threshold in (0.04, 0.08, 0.15):
            for window in ((0.0, 1.0), (0.0, 0.6), (0.0, 0.4)):
                settings.append((f"thr {threshold} window {window}",
                                 FastSampling(cache_threshold=threshold, guidance_window=window)))
        settings.append(("guidance window only (0, 0.6)", FastSampling(cache_threshold=0.0)))
        settings.append(("cache only 0.08", FastSampling(guidance_window=(0.0, 1.0))))

    exact_frames: dict[int, np.ndarray] = {}
    results = []
    pipe("warm-up", num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=0)
    for name, fast in settings:
        times, work, cached, psnrs = [], [], [], []
        for i, case in enumerate(cases):
            if fast is not None:
                pipe.fast_sampling = fast
            rows_run[0] = 0
            t0 = time.perf_counter()
            frames = pipe(case.prompt, num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=args.steps,
                          seed=case.seed, mode="exact" if fast is None else "fast")
            times.append(time.perf_counter() - t0)
            stats = pipe.last_stats
            work.append(rows_run[0])
            cached.append(stats["cached_forwards"] / stats["forwards"])
            if fast is None:
                exact_frames[i] = frames
            else:
                psnrs.append(psnr(frames, exact_frames[i]))
        results.append((name, statistics.median(times), statistics.mean(work), statistics.mean(cached),
                        stats["guided_steps"], psnrs))

    print(f"# spacetime-tiny | {FRAMES} frames {HEIGHT}x{WIDTH} | {args.steps} steps | guidance "
          f"{pipe.guidance_scale} | {len(cases)} prompts | {args.threads} thread(s) | torch {torch.__version__}")
    base_time, base_work = results[0][1], results[0][2]
    print("| setting | s / clip (median) | speedup (wall) | transformer work | speedup (work) | cached forwards "
          "| guided steps | PSNR vs exact dB (mean / worst) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, t, w, c, g, p in results:
        quality = f"{statistics.mean(p):.1f} / {min(p):.1f}" if p else "-"
        print(f"| {name} | {t:.2f} | {base_time / t:.2f}x | {w / base_work:.0%} | {base_work / w:.2f}x | {c:.0%} "
              f"| {g}/{args.steps} | {quality} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
