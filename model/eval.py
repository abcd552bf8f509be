"""`spacetime eval`: prompt adherence and VAE reconstruction, measured from frames alone.

1. A prompt set of shapes-world scenes (canonical captions): single objects from training
   combinations ("seen"), single objects from held-out combinations ("heldout": every purple
   triangle, every green object moving up) and two-object scenes ("pairs"). Sizes and
   durations cycle over the trained buckets.
2. Each prompt is generated through the pipeline (or, with `--ground-truth`, rendered by the
   shapes world itself, which checks the measurer: it must score 100 % there).
3. `model.data.detector` reads colour, shape and motion per object; accuracy per attribute per
   split, both-objects-right rate for pairs, and object consistency across frames.
4. VAE PSNR on held-out clips (never-trained combinations, unseen seeds): encode, decode.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from model.data.captions import canonical_caption
from model.data.detector import DetectedObject, detect_objects
from model.data.shapes import (
    COLOURS, FPS, FRAME_COUNTS, MOTIONS, SHAPES, SIZES, ObjectSpec, Scene, is_held_out,
    place_scene, render, render_clip, sample_scene,
)

EVAL_SEED_OFFSET = 1_000_000  # evaluation seeds never collide with training stream seeds


@dataclass(frozen=True)
class EvalCase:
    prompt: str
    scene: Scene
    split: str          # "seen", "heldout" or "pairs"
    num_frames: int
    height: int
    width: int
    seed: int


def held_out_objects() -> list[ObjectSpec]:
    """All single-object held-out combinations (8 of them)."""
    return [ObjectSpec(s, c, m) for s in SHAPES for c in COLOURS for m in MOTIONS
            if is_held_out(ObjectSpec(s, c, m))]


def build_prompt_set(num_seen: int = 30, num_heldout: int = 32, num_pairs: int = 30, seed: int = 0,
                     frame_counts: tuple[int, ...] = FRAME_COUNTS) -> list[EvalCase]:
    rng = np.random.default_rng(EVAL_SEED_OFFSET + seed)
    buckets = cycle([(t, h, w) for t in frame_counts for (h, w) in SIZES])
    held = cycle(held_out_objects())
    scenes = ([("seen", sample_scene(rng, "train", 1)) for _ in range(num_seen)]
              + [("heldout", Scene((next(held),))) for _ in range(num_heldout)]
              + [("pairs", sample_scene(rng, "train", 2)) for _ in range(num_pairs)])
    cases = []
    for i, (split, scene) in enumerate(scenes):
        t, h, w = next(buckets)
        cases.append(EvalCase(canonical_caption(scene), scene, split, t, h, w,
                              EVAL_SEED_OFFSET + 1000 * seed + i))
    return cases


def score_case(case: EvalCase, frames: np.ndarray) -> dict:
    """Per expected object: colour / shape / motion right; `all` when every object is right."""
    found = detect_objects(frames)
    by_colour: dict[str, DetectedObject] = {o.colour: o for o in found}
    objects = []
    for k, want in enumerate(case.scene.objects):
        if len(case.scene.objects) == 1:  # one object asked: judge the most prominent one
            got = found[0] if found else None
            colour_ok = got is not None and got.colour == want.colour
            got = by_colour.get(want.colour, got)
        else:
            got = by_colour.get(want.colour)
            colour_ok = got is not None
        shape_ok = got is not None and got.shape == want.shape
        motion_ok = got is not None and got.motion == want.motion
        objects.append(dict(colour=colour_ok, shape=shape_ok, motion=motion_ok,
                            all=colour_ok and shape_ok and motion_ok,
                            consistency=got.consistency if got is not None else 0.0,
                            seen_as=None if got is None else f"{got.colour} {got.shape} {got.motion}"))
    # Two objects: is the first-named one on the left (the shapes world's layout rule)? None when
    # either colour is missing.
    pair = [by_colour.get(o.colour) for o in case.scene.objects]
    in_order = pair[0].mean_x < pair[1].mean_x if len(pair) == 2 and None not in pair else None
    return dict(prompt=case.prompt, split=case.split, size=f"{case.width}x{case.height}",
                num_frames=case.num_frames, objects=objects, in_order=in_order,
                all=all(o["all"] for o in objects), extra_objects=max(0, len(found) - len(objects)))


def summarise(scores: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for split in ("seen", "heldout", "pairs"):
        rows = [s for s in scores if s["split"] == split]
        objs = [o for s in rows for o in s["objects"]]
        if not rows:
            continue
        out[split] = {a: float(np.mean([o[a] for o in objs])) for a in ("colour", "shape", "motion")}
        out[split]["all_right"] = float(np.mean([s["all"] for s in rows]))
        out[split]["consistency"] = float(np.mean([o["consistency"] for o in objs]))
        out[split]["n"] = len(rows)
        placed = [s["in_order"] for s in rows if s.get("in_order") is not None]
        if split == "pairs" and placed:  # layout rule: first-named object on the left
            out[split]["in_order"] = float(np.mean(placed))
    return out


@torch.no_grad()
def vae_psnr(vae, num_clips: int = 12, seed: int = 0, num_frames: int = 17,
             device: torch.device | str = "cpu") -> float:
    """Mean PSNR (dB, pixels in [0, 1]) of encode -> decode on held-out-combination clips."""
    from model.vae import decode_latents, encode_video

    rng = np.random.default_rng(EVAL_SEED_OFFSET + 77 + seed)
    values = []
    dtype = next(vae.parameters()).dtype
    for i in range(num_clips):
        h, w = SIZES[i % len(SIZES)]
        scene = sample_scene(rng, "heldout")
        place = place_scene(scene, rng, h, w, num_frames)
        clip = render([scene], [place], h, w, num_frames, device) * 2 - 1   # (1, 3, T, H, W)
        recon = decode_latents(vae, encode_video(vae, clip.to(dtype), sample=False))
        mse = ((recon.float().clamp(-1, 1) - clip) / 2).pow(2).mean().item()
        values.append(10 * np.log10(1.0 / max(mse, 1e-10)))
    return float(np.mean(values))


def evaluate(generate: Callable[[EvalCase], np.ndarray], cases: list[EvalCase],
             log: Callable[[str], None] = print) -> tuple[dict, list[dict]]:
    """Generate + score every case; returns (summary, per-case scores)."""
    scores = []
    for i, case in enumerate(cases):
        frames = generate(case)
        scores.append(score_case(case, frames))
        if log and (i + 1) % 10 == 0:
            log(f"eval {i + 1}/{len(cases)}")
    return summarise(scores), scores


@torch.no_grad()
def reconstruct(vae, frames: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """uint8 (T, H, W, 3) -> the VAE's encode / decode of it, uint8 (T, H, W, 3)."""
    from model.vae import decode_latents, encode_video, from_uint8_frames, to_uint8_frames

    clip = from_uint8_frames(frames, device)[None]  # (1, 3, T, H, W)
    dtype = next(vae.parameters()).dtype
    return to_uint8_frames(decode_latents(vae, encode_video(vae, clip.to(dtype), sample=False))[0])


def ground_truth(case: EvalCase) -> np.ndarray:
    return render_clip(case.scene, case.seed, case.height, case.width, case.num_frames)[0]


def format_table(summary: dict) -> str:
    lines = [f"{'split':<8} {'n':>4} {'colour':>7} {'shape':>7} {'motion':>7} {'all':>7} {'consist':>8}"]
    for split, row in summary.items():
        if isinstance(row, dict) and "n" in row:
            lines.append(f"{split:<8} {row['n']:>4} {row['colour']:>7.1%} {row['shape']:>7.1%} "
                         f"{row['motion']:>7.1%} {row['all_right']:>7.1%} {row['consistency']:>8.1%}")
    if "in_order" in summary.get("pairs", {}):
        lines.append(f"pairs with the first-named object on the left: {summary['pairs']['in_order']:.1%}")
    if "vae_psnr_db" in summary:
        lines.append(f"VAE PSNR (held-out clips): {summary['vae_psnr_db']:.2f} dB")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="spacetime-tiny", help="preset name or pipeline folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ground-truth", action="store_true",
                        help="score rendered shapes-world clips instead of generating (checks the measurer)")
    parser.add_argument("--reconstruct", action="store_true",
                        help="score the model's VAE reconstructions of those clips: the ceiling any DiT "
                             "can reach with this VAE")
    parser.add_argument("--num-seen", type=int, default=30)
    parser.add_argument("--num-heldout", type=int, default=32)
    parser.add_argument("--num-pairs", type=int, default=30)
    parser.add_argument("--frames", type=int, nargs="+", default=list(FRAME_COUNTS),
                        help="frame counts to cycle through (4k+1)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    parser.add_argument("--mode", choices=("exact", "fast"), default="exact",
                        help="sampling mode (fast: step cache + guidance window; see docs/performance.md)")
    parser.add_argument("--vae-clips", type=int, default=12, help="held-out clips for VAE PSNR (0 skips)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write summary + per-prompt scores here")


def run(args: argparse.Namespace) -> int:
    cases = build_prompt_set(args.num_seen, args.num_heldout, args.num_pairs, args.seed, tuple(args.frames))
    start = time.perf_counter()
    pipe = None
    if args.ground_truth:
        generate = ground_truth
    elif args.reconstruct:
        from model.pipeline import load_pipeline

        pipe = load_pipeline(args.model, device=args.device)

        def generate(case: EvalCase) -> np.ndarray:
            return reconstruct(pipe.vae, ground_truth(case), args.device)
    else:
        from model.pipeline import load_pipeline

        pipe = load_pipeline(args.model, device=args.device)
        if getattr(pipe, "is_random_weights", False):
            print("warning: the model has random weights; expect chance-level scores")

        def generate(case: EvalCase) -> np.ndarray:
            return pipe(prompt=case.prompt, num_frames=case.num_frames, height=case.height,
                        width=case.width, fps=FPS, num_inference_steps=args.steps,
                        guidance_scale=args.guidance, seed=case.seed, mode=args.mode)

    summary, scores = evaluate(generate, cases)
    if pipe is not None and args.vae_clips > 0:
        summary["vae_psnr_db"] = vae_psnr(pipe.vae, args.vae_clips, args.seed, device=args.device)
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    summary["model"] = "ground-truth" if args.ground_truth else str(args.model)
    summary["mode"] = "ground-truth" if args.ground_truth else "reconstruct" if args.reconstruct else "generate"
    summary["sampling"] = args.mode
    print(format_table(summary))
    print(f"wall time {summary['wall_s']} s on {args.device}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "cases": scores}, indent=1) + "\n")
    return 0
