"""`spacetime generate "a red ball moving left" -o out.mp4`: one video on this machine, no services."""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
import warnings
from pathlib import Path

DEFAULT_MODEL = "spacetime-tiny"


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT, e.g. 128x128, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what the video should show")
    parser.add_argument("-o", "--output", type=Path, default=Path("out.mp4"), help="MP4 to write (default out.mp4)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"preset name or local pipeline folder (default {DEFAULT_MODEL})")
    parser.add_argument("--seconds", type=_positive_float, default=None,
                        help="duration; frames = seconds * fps + 1 (default: the model's native length)")
    parser.add_argument("--size", type=_size, default=None, metavar="WxH", help="e.g. 128x128 (default: the model's)")
    parser.add_argument("--fps", type=int, default=None, help="frames per second (default: the model's)")
    parser.add_argument("--seed", type=int, default=None, help="same seed, same video (default: random)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance, >= 1 (default: the model's)")
    parser.add_argument("--negative-prompt", default="", help="what the video should avoid")
    parser.add_argument("--quality", choices=("exact", "fast"), default="exact",
                        help="fast: forecast steps + step cache + guidance on the first 60%% of steps "
                             "(docs/performance.md)")
    parser.add_argument("--remix", type=Path, default=None, metavar="MP4",
                        help="remix this clip with the prompt: its frames, size and fps are kept "
                             "(docs/api.md#remix)")
    parser.add_argument("--strength", type=_positive_float, default=0.6,  # model.sampling.REMIX_STRENGTH
                        help="with --remix: share of the schedule run again, (0, 1] (default 0.6)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is safest on a busy machine)")


def _defaults(pipe: object) -> tuple[int, int, int, int]:
    """(fps, num_frames, width, height) the pipeline uses when not told."""
    d = getattr(pipe, "defaults", None)
    if d is not None:
        return d.fps, d.num_frames, d.width, d.height
    return pipe.fps, pipe.num_frames, pipe.width, pipe.height  # diffusers adapter


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from model.pipeline import GenerationCancelled, load_pipeline
    from workers.media import decode_mp4, encode_mp4

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-weights notice is printed below, plainly
            pipe = load_pipeline(args.model, device=device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if pipe.is_random_weights:
        print(f"NOTE: {args.model} has no trained weights here; running with random weights: "
              "output will not follow the prompt.", file=sys.stderr)

    fps_default, frames_default, width_default, height_default = _defaults(pipe)
    remix: dict = {}
    if args.remix is not None:  # the source clip sets the shape
        if args.seconds is not None or args.size is not None:
            print("error: --remix keeps the clip's length and size; drop --seconds and --size", file=sys.stderr)
            return 2
        if not getattr(pipe, "supports_remix", False):
            print(f"error: {args.model} cannot remix a clip", file=sys.stderr)
            return 2
        try:
            source, source_fps = decode_mp4(args.remix)
        except (OSError, ValueError) as exc:  # missing, or not a video PyAV can read
            print(f"error: cannot read {args.remix}: {exc}", file=sys.stderr)
            return 2
        frames_default, height_default, width_default = source.shape[:3]
        fps_default = round(source_fps) or fps_default
        remix = {"init_video": source, "strength": args.strength}
    fps = args.fps or fps_default
    num_frames = frames_default if args.seconds is None else round(args.seconds * fps) + 1
    width, height = args.size or (width_default, height_default)
    steps = args.steps or pipe.num_inference_steps
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)

    bars: list[tqdm] = []  # created on the first step, so argument errors print without a bar

    def progress(step: int, total: int) -> bool:
        if not bars:
            bars.append(tqdm(total=total, desc="denoising", unit="step", file=sys.stderr))
        bars[0].update(step - bars[0].n)
        return True

    try:
        frames = pipe(
            args.prompt, negative_prompt=args.negative_prompt, num_frames=num_frames, height=height, width=width,
            fps=fps, num_inference_steps=steps, guidance_scale=args.guidance, seed=seed, callback=progress,
            **({"mode": "fast"} if args.quality == "fast" else {}), **remix,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (GenerationCancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return 130
    finally:
        for bar in bars:
            bar.close()
    remixed = f" remix_of={args.remix.name} strength={args.strength}" if remix else ""
    metadata = {"comment": f"spacetime model={args.model} seed={seed} steps={steps}{remixed} prompt={args.prompt}"}
    dest = encode_mp4(frames, args.output, fps=fps, metadata=metadata)
    elapsed = time.perf_counter() - started
    print(f"wrote {dest} ({len(frames)} frames, {width}x{height}, {fps} fps, seed {seed}) in {elapsed:.1f} s")
    return 0
