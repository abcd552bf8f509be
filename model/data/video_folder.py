"""Operators' own clips for fine-tuning: a folder of `.mp4` files with captions.

Two layouts, either one:
- `clip.mp4` beside `clip.txt` (the caption, one line);
- a `captions.jsonl` in the folder, one `{"video": "relative/or/absolute.mp4", "caption": "..."}`
  per line.

Each clip is decoded with PyAV, resampled to the target fps, cut to the longest 4k+1 frames
that fit `max_frames`, and resized + centre-cropped to the bucket whose aspect ratio is
closest to the clip's. `batches()` groups clips of one bucket, as the shapes world does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F

from model.data.buckets import Batch, Bucket
from model.data.shapes import SIZES
from model.vae import from_uint8_frames

JSONL_NAME = "captions.jsonl"


@dataclass(frozen=True)
class ClipRecord:
    video: Path
    caption: str


def find_clips(folder: str | Path) -> list[ClipRecord]:
    """Every captioned clip in `folder`; clear errors for a missing folder, caption or file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {folder} does not exist")
    jsonl = folder / JSONL_NAME
    records: list[ClipRecord] = []
    if jsonl.exists():
        for n, line in enumerate(jsonl.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path, caption = Path(row["video"]), str(row["caption"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{jsonl}:{n}: expected {{\"video\": ..., \"caption\": ...}}: {exc}") from exc
            path = path if path.is_absolute() else folder / path
            if not path.exists():
                raise FileNotFoundError(f"{jsonl}:{n}: video {path} does not exist")
            records.append(ClipRecord(path, caption.strip()))
    else:
        for path in sorted(folder.glob("*.mp4")):
            txt = path.with_suffix(".txt")
            if not txt.exists():
                raise FileNotFoundError(f"{path.name} has no caption file {txt.name} (or add {JSONL_NAME})")
            records.append(ClipRecord(path, txt.read_text().strip()))
    if not records:
        raise ValueError(f"no captioned .mp4 clips in {folder} (expected clip.mp4 + clip.txt or {JSONL_NAME})")
    return records


def decode_clip(path: str | Path, fps: float) -> np.ndarray:
    """All frames resampled to `fps` (nearest source frame by timestamp) -> uint8 (T, H, W, 3)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base) if frame.pts is not None else len(times) / 30.0)
    if not frames:
        raise ValueError(f"{path}: no video frames")
    times_arr = np.array(times) - times[0]
    duration = times_arr[-1] + (times_arr[1] - times_arr[0] if len(times_arr) > 1 else 0.0)
    wanted = np.arange(0.0, max(duration, 1e-6), 1.0 / fps)
    idx = np.abs(times_arr[None, :] - wanted[:, None]).argmin(1)
    return np.stack([frames[i] for i in idx])


def choose_bucket(num_frames: int, height: int, width: int, max_frames: int,
                  sizes: tuple[tuple[int, int], ...] = SIZES) -> Bucket:
    """The size with the nearest aspect ratio and the longest 4k+1 frame count available."""
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    usable = min(num_frames, max_frames)
    frames = (usable - 1) // 4 * 4 + 1
    ratio = np.log(width / height)
    h, w = min(sizes, key=lambda s: abs(np.log(s[1] / s[0]) - ratio))
    return Bucket(frames, h, w)


def fit_clip(frames: np.ndarray, bucket: Bucket) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T', h, w) in [-1, 1]: first T' frames, resize + centre crop."""
    clip = from_uint8_frames(frames[: bucket.num_frames])  # (3, T', H, W)
    _, _, h, w = clip.shape
    scale = max(bucket.height / h, bucket.width / w)
    nh, nw = max(bucket.height, round(h * scale)), max(bucket.width, round(w * scale))
    clip = F.interpolate(clip, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - bucket.height) // 2, (nw - bucket.width) // 2
    return clip[:, :, top: top + bucket.height, left: left + bucket.width].clamp(-1, 1)


class VideoFolderDataset:
    """Captioned real clips, decoded once and kept in memory (fine-tuning sets are small)."""

    def __init__(self, folder: str | Path, fps: float = 8, max_frames: int = 33,
                 sizes: tuple[tuple[int, int], ...] = SIZES) -> None:
        self.records = find_clips(folder)
        self.items: list[tuple[torch.Tensor, str]] = []
        for rec in self.records:
            frames = decode_clip(rec.video, fps)
            bucket = choose_bucket(len(frames), frames.shape[1], frames.shape[2], max_frames, sizes)
            self.items.append((fit_clip(frames, bucket), rec.caption))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.items[i]

    def batches(self, batch_size: int, seed: int = 0, device: torch.device | str = "cpu") -> Iterator[Batch]:
        """Endless shuffled batches; each batch holds clips of one shape only."""
        rng = np.random.default_rng(seed)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (clip, _) in enumerate(self.items):
            groups.setdefault(tuple(clip.shape), []).append(i)
        keys = sorted(groups)
        weights = np.array([len(groups[k]) for k in keys], dtype=np.float64)
        while True:
            members = groups[keys[rng.choice(len(keys), p=weights / weights.sum())]]
            pick = rng.choice(members, size=min(batch_size, len(members)), replace=False)
            video = torch.stack([self.items[i][0] for i in pick]).to(device)
            yield Batch(video, [self.items[i][1] for i in pick], [])
