"""Fast mode against exact mode on the CPU with the tiny preset: speed, work skipped, PSNR.

For each prompt of a shapes-world prompt set (model/eval.py's canonical captions), generates the
clip in exact mode and in each fast setting with the same seed, and reports per setting:
wall time of the pipeline call (median over prompts), the transformer work done (block-rows: how
many (sample, block) pairs ran, counted with forward hooks; exact = steps x 2 x layers), the share
of forwards served by the step cache, and PSNR of the fast frames against the exact frames
(mean and worst over prompts). With `--adherence` the prompts are `spacetime eval`'s default set
(30 seen, 32 held-out, 30 two-object prompts, each at its own size and length) and every clip is
also scored by the shapes evaluator: "all right" per split, and the drop against exact in points.

    .venv/bin/python bench/fast_mode.py [--prompts 8] [--steps 20] [--threads 1]
    .venv/bin/python bench/fast_mode.py --grid       # also a small threshold x window sweep
    .venv/bin/python bench/fast_mode.py --adherence --threads 2   # + the evaluator's scores (~15 min)
    .venv/bin/python bench/fast_mode.py --adherence --default-only --fp8 --threads 2   # FP8's cost
    .venv/bin/python bench/fast_mode.py --adherence --default-only --forecast --fewer-steps 10,6 --threads 2
    .venv/bin/python bench/fast_mode.py --adherence --default-only --steps 50 --forecast 3:0.2:0,3:0.2:1 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.eval import build_prompt_set, score_case, summarise  # noqa: E402
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
    parser.add_argument("--adherence", action="store_true",
                        help="eval's default prompt set, scored by the shapes evaluator (and a few other settings)")
    parser.add_argument("--default-only", action="store_true",
                        help="with --adherence: exact and the default fast setting only")
    parser.add_argument("--fp8", action="store_true",
                        help="add the default fast setting with FP8 matmuls, and FP8 alone (no cache, guidance on every step)")
    parser.add_argument("--forecast", nargs="?", const="2:0.2:1,3:0.2:1,2:0.2:0,3:0.3:1,4:0.2:1", default="",
                        help="add forecast-step settings, as every:start:order,... (default: a small sweep)")
    parser.add_argument("--fewer-steps", default="",
                        help="add exact mode at these step counts (comma-separated), for the same work as forecasting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_pipeline("spacetime-tiny")
    rows_run = [0]
    for block in pipe.transformer.blocks:
        block.register_forward_hook(lambda mod, inp, out: rows_run.__setitem__(0, rows_run[0] + inp[0].shape[0]))
    if args.adherence:
        cases = build_prompt_set()
    else:
        cases = build_prompt_set(num_seen=args.prompts - args.prompts // 4, num_heldout=0, num_pairs=args.prompts // 4)

    settings: list[tuple[str, FastSampling | None]] = [("exact", None), ("fast (default)", FastSampling())]
    steps_of: dict[str, int] = {}  # settings that run another step count than --steps
    if args.grid:
        for threshold in (0.04, 0.08, 0.15):
            for window in ((0.0, 1.0), (0.0, 0.6), (0.0, 0.4)):
                settings.append((f"thr {threshold} window {window}",
                                 FastSampling(cache_threshold=threshold, guidance_window=window)))
        settings.append(("guidance window only (0, 0.6)", FastSampling(cache_threshold=0.0)))
        settings.append(("cache only 0.08", FastSampling(guidance_window=(0.0, 1.0))))
    if args.fp8:
        settings.append(("fast (default) + FP8", FastSampling(fp8=True)))
        settings.append(("FP8 only (no cache, guidance everywhere)",
                         FastSampling(cache_threshold=0.0, guidance_window=(0.0, 1.0), fp8=True)))
    for spec in filter(None, args.forecast.split(",")):
        every, start, order = spec.split(":")
        settings.append((f"forecast every {every} from {start}, order {order}",
                         replace(FastSampling(), forecast_every=int(every), forecast_start=float(start),
                                 forecast_order=int(order))))
    for steps in filter(None, args.fewer_steps.split(",")):
        settings.append((f"exact, {steps} steps", None))
        steps_of[settings[-1][0]] = int(steps)
    if args.adherence and not args.default_only:
        for threshold, window in ((0.15, (0.0, 0.6)), (0.15, (0.0, 1.0)), (0.08, (0.0, 1.0)), (0.04, (0.0, 1.0)),
                                  (0.0, (0.0, 0.6))):
            settings.append((f"thr {threshold} window {window}",
                             FastSampling(cache_threshold=threshold, guidance_window=window)))

    exact_frames: dict[int, np.ndarray] = {}
    results = []
    pipe("warm-up", num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=0)
    for name, fast in settings:
        times, work, cached, psnrs, scores = [], [], [], [], []
        for i, case in enumerate(cases):
            if fast is not None:
                pipe.fast_sampling = fast
            rows_run[0] = 0
            t0 = time.perf_counter()
            shape = (case.num_frames, case.height, case.width) if args.adherence else (FRAMES, HEIGHT, WIDTH)
            frames = pipe(case.prompt, num_frames=shape[0], height=shape[1], width=shape[2],
                          num_inference_steps=steps_of.get(name, args.steps), seed=case.seed,
                          mode="exact" if fast is None else "fast")
            times.append(time.perf_counter() - t0)
            stats = pipe.last_stats
            work.append(rows_run[0] / shape[0])  # per frame: clips differ in length with --adherence
            scores.append(score_case(case, frames))
            cached.append(stats["cached_forwards"] / stats["forwards"])
            if name == "exact":
                exact_frames[i] = frames
            else:
                psnrs.append(psnr(frames, exact_frames[i]))
        results.append((name, statistics.median(times), statistics.mean(work), statistics.mean(cached),
                        f"{stats['guided_steps']}/{stats['steps']}", stats["forecast_steps"], psnrs,
                        summarise(scores)))

    print(f"# spacetime-tiny | {FRAMES} frames {HEIGHT}x{WIDTH} | {args.steps} steps | guidance "
          f"{pipe.guidance_scale} | {len(cases)} prompts | {args.threads} thread(s) | torch {torch.__version__}")
    base_time, base_work = results[0][1], results[0][2]
    splits = [s for s in ("seen", "heldout", "pairs") if s in results[0][-1]]
    base_all = [results[0][-1][s]["all_right"] for s in splits]
    print("| setting | s / clip (median) | speedup (wall) | transformer work | speedup (work) | cached forwards "
          "| guided steps | forecast steps | PSNR vs exact dB (mean / worst) | all right " + " / ".join(splits)
          + " | drop, points |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, t, w, c, g, f, p, summary in results:
        finite = [v for v in p if np.isfinite(v)]  # identical frames give inf
        quality = (f"{statistics.mean(finite):.1f} / {min(finite):.1f}" if finite else "identical") if p else "-"
        if finite and len(finite) < len(p):
            quality += f" ({len(p) - len(finite)} identical)"
        right = [summary[s]["all_right"] for s in splits]
        drop = 100 * float(np.mean(base_all) - np.mean(right))
        print(f"| {name} | {t:.2f} | {base_time / t:.2f}x | {w / base_work:.0%} | {base_work / w:.2f}x | {c:.0%} "
              f"| {g} | {f} | {quality} | {' / '.join(f'{r:.1%}' for r in right)} | {drop:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
