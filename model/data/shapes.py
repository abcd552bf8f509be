"""The shapes world: procedural clips of coloured shapes moving on dark backgrounds.

A scene is a list of one or two objects, each with a shape, a colour and a motion. Placement
(size, start, speed, background) is drawn from a seeded generator, and frames are rasterised
from signed distance functions with a one-pixel anti-aliased edge, batched in torch so the
same code fills a training batch on the GPU or a test clip on the CPU.

Held-out combinations (every purple triangle, every green object moving up) never appear in
training scenes; `spacetime eval` prompts with them to measure compositional generalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white")
MOTIONS = ("left", "right", "up", "down", "still")

# Saturated, well separated RGB in [0, 1]; every one has a channel >= 0.85 so it stands out
# from backgrounds, whose channels stay <= BACKGROUND_MAX.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.25),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.87, 0.15),
    "purple": (0.65, 0.25, 0.88),
    "orange": (0.98, 0.55, 0.10),
    "white": (0.95, 0.95, 0.95),
}
BACKGROUND_MAX = 0.25
# Unit direction in image coordinates (x right, y down).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
    "still": (0.0, 0.0),
}
# Object radius and speed are fractions of the frame: radius of min(H, W), speed per frame of
# the side it moves along. At 8 fps a 33-frame clip crosses about half the frame.
RADIUS_RANGE = (0.10, 0.14)
SPEED_RANGE = (0.014, 0.022)
FPS = 8
# Buckets trained together: (height_px, width_px) and frame counts (4k + 1, 1 to 4 s at 8 fps).
SIZES: tuple[tuple[int, int], ...] = ((128, 128), (96, 160), (160, 96))
FRAME_COUNTS: tuple[int, ...] = (9, 17, 25, 33)


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    motion: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[ObjectSpec, ...]


@dataclass(frozen=True)
class Placement:
    """Where a scene's objects are: pixel units for one (height, width, num_frames)."""

    centres: np.ndarray      # (K, T, 2) x, y per object per frame
    radii: np.ndarray        # (K,)
    background: np.ndarray   # (2, 3) top and bottom RGB of a vertical gradient
    colours: np.ndarray      # (K, 3) RGB with a little jitter


def is_held_out(obj: ObjectSpec) -> bool:
    """Combinations never trained: every purple triangle, every green object moving up."""
    return (obj.colour == "purple" and obj.shape == "triangle") or (
        obj.colour == "green" and obj.motion == "up")


def scene_is_held_out(scene: Scene) -> bool:
    return any(is_held_out(obj) for obj in scene.objects)


def sample_object(rng: np.random.Generator, split: str) -> ObjectSpec:
    """A random object from `split`: 'train' (no held-out combination) or 'heldout'."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    while True:
        obj = ObjectSpec(SHAPES[rng.integers(3)], COLOURS[rng.integers(7)], MOTIONS[rng.integers(5)])
        if is_held_out(obj) == (split == "heldout"):
            return obj


def sample_scene(rng: np.random.Generator, split: str = "train", num_objects: int | None = None,
                 pair_share: float = 0.5) -> Scene:
    """One or two objects with distinct colours (colour identifies an object in evaluation);
    two with probability `pair_share` unless `num_objects` is given.

    A held-out two-object scene has its first object held out and its second seen.
    """
    k = num_objects if num_objects is not None else (1 if rng.random() < 1.0 - pair_share else 2)
    if k not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2, got {k}")
    first = sample_object(rng, split)
    objects = [first]
    while len(objects) < k:
        other = sample_object(rng, "train")
        if other.colour != first.colour:
            objects.append(other)
    return Scene(tuple(objects))


def _track(rng: np.random.Generator, motion: str, radius: float, height: int, width: int,
           num_frames: int) -> np.ndarray:
    """(T, 2) centre per frame for a straight constant-speed path that stays inside the frame."""
    dx, dy = DIRECTIONS[motion]
    margin = radius * 1.25 + 1.0
    span = width if dx else height
    travel = 0.0
    if motion != "still":
        speed = rng.uniform(*SPEED_RANGE) * span
        travel = min(speed * (num_frames - 1), span - 2 * margin - 2.0)
    # Start anywhere that keeps the whole path inside [margin, side - margin].
    lo_x, hi_x = margin + max(0.0, -dx * travel), width - margin - max(0.0, dx * travel)
    lo_y, hi_y = margin + max(0.0, -dy * travel), height - margin - max(0.0, dy * travel)
    start = np.array([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)])
    steps = np.linspace(0.0, travel, num_frames)[:, None]
    return start[None, :] + steps * np.array([dx, dy])[None, :]


def place_scene(scene: Scene, rng: np.random.Generator, height: int, width: int,
                num_frames: int) -> Placement:
    """Sizes, paths and colours (rejection sampling). Two objects never overlap in any frame,
    and they read left to right in the order they are named: the first object's mean x is
    left of the second's by at least their mean radius. That layout rule is what lets a small
    model bind each phrase of "a red circle ... and a blue square ..." to its own object. The
    rare scene whose paths cannot meet it (both objects crossing most of a square frame
    horizontally: about 1 in 70 of those) keeps the first non-overlapping placement drawn."""
    fallback = None
    for _ in range(1000):
        radii = rng.uniform(*RADIUS_RANGE, size=len(scene.objects)) * min(height, width)
        centres = np.stack([_track(rng, o.motion, r, height, width, num_frames)
                            for o, r in zip(scene.objects, radii)])
        if len(scene.objects) == 1:
            break
        if np.linalg.norm(centres[0] - centres[1], axis=-1).min() <= 1.45 * radii.sum() + 2.0:
            continue
        mean_x = centres[:, :, 0].mean(axis=1)
        if mean_x[1] - mean_x[0] >= radii.mean():
            break
        fallback = fallback or (radii, centres)
    else:
        if fallback is None:
            raise RuntimeError("could not place two non-overlapping objects")
        radii, centres = fallback
    top = rng.uniform(0.0, BACKGROUND_MAX, size=3)
    bottom = np.clip(top + rng.uniform(-0.06, 0.06, size=3), 0.0, BACKGROUND_MAX)
    colours = np.clip(np.array([PALETTE[o.colour] for o in scene.objects])
                      + rng.uniform(-0.04, 0.04, size=(len(scene.objects), 3)), 0.0, 1.0)
    return Placement(centres, radii, np.stack([top, bottom]), colours)


def _sdf(shape: str, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance in pixels (negative inside); px, py are offsets from the centre."""
    if shape == "circle":
        return torch.sqrt(px * px + py * py) - r
    if shape == "square":  # half side 0.9 r: about the circle's area
        a = 0.9 * r
        qx, qy = px.abs() - a, py.abs() - a
        outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
        return outside + torch.maximum(qx, qy).clamp(max=0)
    if shape == "triangle":  # upright equilateral, half side 1.2 r (Inigo Quilez's sdf)
        a, k = 1.2 * r, 3.0 ** 0.5
        x, y = px.abs() - a, -py + a / k  # flip y: image rows grow downwards
        x, y = torch.broadcast_tensors(x, y)
        fold = (x + k * y) > 0
        x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
        x = x - torch.minimum(torch.maximum(x, -2 * a), torch.zeros_like(x))
        return -torch.sqrt(x * x + y * y) * torch.sign(y)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def pack(scenes: list[Scene], placements: list[Placement]) -> dict[str, np.ndarray]:
    """A batch's placements as arrays (cheap to pass between processes), K = most objects."""
    B, K = len(scenes), max(len(s.objects) for s in scenes)
    num_frames = placements[0].centres.shape[1]
    out = dict(centres=np.zeros((B, K, num_frames, 2), np.float32), radii=np.ones((B, K), np.float32),
               colours=np.zeros((B, K, 3), np.float32), shape_ids=np.zeros((B, K), np.int64),
               present=np.zeros((B, K), np.float32),
               backgrounds=np.stack([p.background for p in placements]).astype(np.float32))
    for b, (scene, place) in enumerate(zip(scenes, placements)):
        for k, obj in enumerate(scene.objects):
            out["centres"][b, k], out["radii"][b, k] = place.centres[k], place.radii[k]
            out["colours"][b, k] = place.colours[k]
            out["shape_ids"][b, k], out["present"][b, k] = SHAPES.index(obj.shape), 1.0
    return out


def render(scenes: list[Scene], placements: list[Placement], height: int, width: int,
           num_frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rasterise a batch of scenes -> float (B, 3, T, H, W) in [0, 1]."""
    return render_packed(pack(scenes, placements), height, width, device)


def render_packed(packed: dict, height: int, width: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """`pack` arrays -> float (B, 3, T, H, W) in [0, 1].

    Vectorised over the batch (a few dozen kernels whatever B is): every object slot is drawn
    as all three shapes and the right distance is selected per slot; empty slots get alpha 0.
    """
    B, K, num_frames = packed["centres"].shape[:3]
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    centres, radii, colours, shape_ids, present, backgrounds = (
        t(packed[k]) for k in ("centres", "radii", "colours", "shape_ids", "present", "backgrounds"))

    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    ramp = (ys / height).view(1, 1, 1, height, 1)                                    # rows
    top, bottom = (backgrounds[:, i].view(B, 3, 1, 1, 1) for i in (0, 1))
    video = (top * (1 - ramp) + bottom * ramp).expand(B, 3, num_frames, height, width)
    for k in range(K):  # later objects are drawn over earlier ones
        px = xs.view(1, 1, 1, width) - centres[:, k, :, 0].view(B, num_frames, 1, 1)   # (B, T, 1, W)
        py = ys.view(1, 1, height, 1) - centres[:, k, :, 1].view(B, num_frames, 1, 1)  # (B, T, H, 1)
        r = radii[:, k].view(B, 1, 1, 1)
        sdf = torch.stack([_sdf(name, px, py, r).expand(B, num_frames, height, width)
                           for name in SHAPES])                                        # (3, B, T, H, W)
        sdf = sdf.gather(0, shape_ids[:, k].view(1, B, 1, 1, 1).expand(1, B, num_frames, height, width))[0]
        alpha = (0.5 - sdf).clamp(0.0, 1.0) * present[:, k].view(B, 1, 1, 1)          # (B, T, H, W)
        alpha = alpha[:, None]                                                         # (B, 1, T, H, W)
        video = video * (1 - alpha) + colours[:, k].view(B, 3, 1, 1, 1) * alpha
    return video.contiguous()


def render_clip(scene: Scene, seed: int, height: int = 128, width: int = 128,
                num_frames: int = 17) -> tuple[np.ndarray, Placement]:
    """One clip as uint8 (T, H, W, 3), deterministic in `seed`, with its placement."""
    place = place_scene(scene, np.random.default_rng(seed), height, width, num_frames)
    video = render([scene], [place], height, width, num_frames)[0]
    frames = (video.permute(1, 2, 3, 0) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    return frames, place
