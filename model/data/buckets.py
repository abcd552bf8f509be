"""Bucketed batches: every batch shares one (frames, height, width), buckets mix over steps.

Batch size scales inversely with a bucket's pixel count so each step costs about the same,
whichever aspect ratio and duration it drew. `ShapesWorldStream` splits a batch in two: a
CPU plan (scenes, placements, captions; optionally drawn by worker processes) and the
rasterisation, done on the training device, so the GPU never waits on pixels from the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from model.data.captions import random_caption
from model.data.shapes import (
    FRAME_COUNTS, SIZES, Scene, pack, place_scene, render_packed, sample_scene,
)


@dataclass(frozen=True)
class Bucket:
    num_frames: int
    height: int
    width: int

    @property
    def voxels(self) -> int:
        return self.num_frames * self.height * self.width


@dataclass
class Plan:
    bucket: Bucket
    packed: dict                 # model.data.shapes.pack arrays
    captions: list[str]
    scenes: list[Scene]


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
                 buckets: list[Bucket] | None = None, max_batch: int = 256, pair_share: float = 0.5,
                 caption_noise: float = 0.0) -> None:
        self.buckets = buckets or all_buckets()
        self.pair_share, self.caption_noise = pair_share, caption_noise  # see sample_scene, random_caption
        self.voxels_per_batch = voxels_per_batch
        self.max_batch = max_batch
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.device = device

    def next_plan(self) -> Plan:
        """The CPU half of a batch: scenes, placements (packed arrays) and captions."""
        bucket = self.buckets[int(self.rng.integers(len(self.buckets)))]
        n = batch_size_for(bucket, self.voxels_per_batch, self.max_batch)
        scenes = [sample_scene(self.rng, "train", pair_share=self.pair_share) for _ in range(n)]
        placements = [place_scene(s, self.rng, bucket.height, bucket.width, bucket.num_frames)
                      for s in scenes]
        captions = [random_caption(s, self.rng, self.caption_noise) for s in scenes]
        return Plan(bucket, pack(scenes, placements), captions, scenes)

    def next_batch(self) -> Batch:
        return self.render(self.next_plan())

    def render(self, plan: Plan) -> Batch:
        """The device half: rasterise a plan where the model trains."""
        video = render_packed(plan.packed, plan.bucket.height, plan.bucket.width, self.device)
        return Batch(video * 2.0 - 1.0, plan.captions, plan.scenes)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    def prefetched(self, num_workers: int) -> Iterator[Batch]:
        """Batches whose plans come from `num_workers` processes (0: this one), rendered here.

        Each worker draws from its own seed, so the stream stays reproducible for a given
        worker count.
        """
        if num_workers <= 0:
            yield from self
            return
        loader = torch.utils.data.DataLoader(
            _PlanSource(self), batch_size=None, num_workers=num_workers, prefetch_factor=4,
            persistent_workers=True)
        for plan in loader:
            yield self.render(plan)


class _PlanSource(torch.utils.data.IterableDataset):
    def __init__(self, stream: ShapesWorldStream) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[Plan]:
        info = torch.utils.data.get_worker_info()
        if info is not None:  # decorrelate workers; the stream object is a per-worker copy
            self.stream.rng = np.random.default_rng([self.stream.seed, info.id])
        while True:
            yield self.stream.next_plan()
