"""Remix strength on the tiny model: how much of the source a remix keeps, and how well it follows the new prompt.

For each single-object prompt of `spacetime eval`'s prompt set (model/eval.py: seen combinations
first), the source clip is generated from its prompt and seed; the remix prompt changes one
attribute of the object (colour, shape or motion, cycling; never into a held-out combination),
and the remix runs at each strength with another seed. Per strength the table reports:

- follows: the shapes evaluator's "all right" rate of the remix against the remix prompt, and
  per changed attribute whether the new value was taken;
- kept: the share of remixes whose object keeps the source's unchanged attributes, and the mean
  distance of the object's mean x position from the source's (in widths; a fresh clip from the
  same prompt, strength 1, is the no-memory reference);
- time of the pipeline call (median) and the steps run.

    .venv/bin/python bench/remix.py [--prompts 24] [--strengths 0.3,0.5,0.6,0.7,0.8,1.0] [--threads 2]
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

from model.data.captions import canonical_caption  # noqa: E402
from model.data.detector import detect_objects  # noqa: E402
from model.data.shapes import COLOURS, MOTIONS, SHAPES, Scene, is_held_out  # noqa: E402
from model.eval import EvalCase, build_prompt_set, score_case  # noqa: E402
from model.pipeline import load_pipeline  # noqa: E402

ATTRIBUTES = ("colour", "shape", "motion")
CHOICES = {"colour": COLOURS, "shape": SHAPES, "motion": MOTIONS}


def changed_case(case: EvalCase, attribute: str, offset: int) -> EvalCase:
    """The case with one attribute of its object changed to another value (not a held-out combination)."""
    obj = case.scene.objects[0]
    values = CHOICES[attribute]
    start = values.index(getattr(obj, attribute))
    for k in range(1, len(values)):
        new = replace(obj, **{attribute: values[(start + offset + k) % len(values)]})
        if getattr(new, attribute) != getattr(obj, attribute) and not is_held_out(new):
            scene = Scene((new,))
            return replace(case, prompt=canonical_caption(scene), scene=scene, seed=case.seed + 7)
    raise ValueError(f"no other {attribute} for {obj}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24, help="single-object source prompts")
    parser.add_argument("--strengths", default="0.3,0.5,0.6,0.7,0.8,1.0")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="spacetime-tiny")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    strengths = [float(s) for s in args.strengths.split(",")]

    pipe = load_pipeline(args.model)
    cases = [c for c in build_prompt_set() if len(c.scene.objects) == 1][: args.prompts]
    rows: dict[float, list[dict]] = {s: [] for s in strengths}
    for i, case in enumerate(cases):
        shape = dict(num_frames=case.num_frames, height=case.height, width=case.width,
                     num_inference_steps=args.steps)
        source = pipe(case.prompt, seed=case.seed, **shape)
        found = detect_objects(source)
        if not found:
            continue  # no object in the source: nothing to keep
        attribute = ATTRIBUTES[i % 3]
        target = changed_case(case, attribute, i // 3)
        for strength in strengths:
            start = time.perf_counter()
            clip = pipe(target.prompt, seed=target.seed, init_video=source, strength=strength, **shape)
            seconds = time.perf_counter() - start
            score = score_case(target, clip)
            got = detect_objects(clip)
            kept_attrs = [a for a in ATTRIBUTES if a != attribute]
            want = target.scene.objects[0]
            rows[strength].append(dict(
                follows=score["all"], attribute=attribute, took=score["objects"][0][attribute],
                kept=bool(got) and all(getattr(got[0], a) == getattr(want, a) for a in kept_attrs),
                dx=abs(got[0].mean_x - found[0].mean_x) if got else None,
                seconds=seconds, steps=pipe.last_stats["steps"]))
        print(f"  {i + 1}/{len(cases)} {case.prompt!r} -> {target.prompt!r}", file=sys.stderr)

    print(f"\nRemix on {args.model}, {len(rows[strengths[0]])} sources ({torch.get_num_threads()} threads, torch "
          f"{torch.__version__}); follows = all attributes of the remix prompt right (shapes evaluator)\n")
    print("| strength | steps run | follows | colour taken | shape taken | motion taken | others kept | "
          "mean |dx| from source | median s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for strength, items in rows.items():
        def rate(values: list[bool]) -> str:
            return f"{100 * np.mean(values):.0f} %" if values else "-"
        took = {a: rate([r["took"] for r in items if r["attribute"] == a]) for a in ATTRIBUTES}
        dxs = [r["dx"] for r in items if r["dx"] is not None]
        print(f"| {strength:g} | {items[0]['steps']} | {rate([r['follows'] for r in items])} | {took['colour']} | "
              f"{took['shape']} | {took['motion']} | {rate([r['kept'] for r in items])} | "
              f"{statistics.mean(dxs):.3f} | {statistics.median(r['seconds'] for r in items):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
