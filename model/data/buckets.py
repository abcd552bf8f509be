"""Bucketed batches: every batch shares one (frames, height, width), buckets mix over steps.

Batch size scales inversely with a bucket's pixel count so each step costs about the same,
whichever aspect ratio and duration it drew. `ShapesWorldStream` renders its batches on the
training device directly, so the GPU never waits on a CPU data loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from model.data.captions import random_caption
from model.data.shapes import FRAME_COUNTS, SIZES, Scene, place_scene, render, sample_scene


@dataclass(frozen=True)
class Bucket:
    num_frames: int
    height: int
    width: int

    @property
    def voxels(self) -> int:
        return self.num_frames * self.height * self.width


@dataclass
class Batch:
    video: torch.Tensor          # (B, 3, T, H, W) in [-1, 1]
    captions: list[str]
    scenes: list[Scene]


def all_buckets(sizes=SIZES, frame_counts=FRAME_COUNTS) -> list[Bucket]:
    return [Bucket(t, h, w) for t in frame_counts for (h, w) in sizes]


def batch_size_for(bucket: Bucket, voxels_per_batch: int, max_batch: int = 256) -> int:
    """How many clips of `bucket` fit a step of about `voxels_per_batch` pixels x frames."""
    return int(max(1, min(max_batch, voxels_per_batch // bucket.voxels)))


class ShapesWorldStream:
    """Endless, seeded batches of shapes-world clips with varied captions (training split only).

    `voxels_per_batch` sets the work per step (e.g. 16 * 17 * 128 * 128 gives 16 clips of
    17 frames at 128x128); `buckets` defaults to every size x duration.
    """

    def __init__(self, voxels_per_batch: int, seed: int = 0, device: torch.device | str = "cpu",
                 buckets: list[Bucket] | None = None, max_batch: int = 256) -> None:
        self.buckets = buckets or all_buckets()
        self.voxels_per_batch = voxels_per_batch
        self.max_batch = max_batch
        self.rng = np.random.default_rng(seed)
        self.device = device

    def next_batch(self) -> Batch:
        bucket = self.buckets[int(self.rng.integers(len(self.buckets)))]
        n = batch_size_for(bucket, self.voxels_per_batch, self.max_batch)
        scenes = [sample_scene(self.rng, "train") for _ in range(n)]
        placements = [place_scene(s, self.rng, bucket.height, bucket.width, bucket.num_frames)
                      for s in scenes]
        video = render(scenes, placements, bucket.height, bucket.width, bucket.num_frames,
                       self.device)
        captions = [random_caption(s, self.rng) for s in scenes]
        return Batch(video * 2.0 - 1.0, captions, scenes)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()
