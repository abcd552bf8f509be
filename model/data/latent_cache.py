"""Shapes-world clips encoded once by the frozen VAE, kept on the training device.

Why: the Wan VAE runs its causal chunks as thousands of small kernels, so encoding a fresh
batch every DiT step costs more than the DiT step itself. Encoding large batches once and
reusing them (captions are redrawn from the stored scenes on every use, so the text side
stays varied) lets the DiT train many times more steps in the same time.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from model.data.buckets import Batch, Bucket, ShapesWorldStream, batch_size_for
from model.data.captions import random_caption
from model.data.shapes import Scene


class LatentCache:
    """Per bucket: latents (N, C, T', H', W') in bf16 and the scenes they came from."""

    def __init__(self) -> None:
        self.latents: dict[Bucket, list[torch.Tensor]] = {}
        self.scenes: dict[Bucket, list[Scene]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self.scenes.values())

    @torch.no_grad()
    def fill(self, encode: Callable[[torch.Tensor], torch.Tensor], buckets: list[Bucket],
             clips_per_bucket: int, time_s: float, voxels_per_call: int, seed: int,
             device: torch.device | str, pair_share: float = 0.5) -> None:
        """Encode round-robin over `buckets` until each has `clips_per_bucket` or time runs out.

        encode: pixels (B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C, T', H', W').
        """
        start = time.perf_counter()
        streams = {b: ShapesWorldStream(voxels_per_call, seed + i, device, [b], pair_share=pair_share)
                   for i, b in enumerate(buckets)}
        while True:
            pending = [b for b in buckets if len(self.scenes.get(b, [])) < clips_per_bucket]
            if not pending or (len(self) and time.perf_counter() - start > time_s):
                break
            for bucket in pending:
                batch = streams[bucket].next_batch()
                self.latents.setdefault(bucket, []).append(encode(batch.video).to(torch.bfloat16))
                self.scenes.setdefault(bucket, []).extend(batch.scenes)
        for bucket in list(self.latents):  # one tensor per bucket for fast indexing
            self.latents[bucket] = [torch.cat(self.latents[bucket])]

    def sample(self, voxels_per_batch: int, rng: np.random.Generator, max_batch: int = 256,
               caption_noise: float = 0.0, uniform: bool = False) -> Batch:
        """A batch from one bucket with fresh captions; `Batch.video` holds latents here, not pixels.

        The bucket is drawn in proportion to the clips it holds, or evenly with `uniform`. A fill cut
        short by time holds more short clips than long ones (each call encodes equal voxels), so the
        proportional draw trains short clips more often."""
        buckets = sorted(self.scenes, key=lambda b: (b.num_frames, b.height, b.width))
        counts = np.array([len(self.scenes[b]) for b in buckets], dtype=np.float64)
        weights = np.ones_like(counts) if uniform else counts
        bucket = buckets[rng.choice(len(buckets), p=weights / weights.sum())]
        n = min(batch_size_for(bucket, voxels_per_batch, max_batch), len(self.scenes[bucket]))
        idx = rng.choice(len(self.scenes[bucket]), size=n, replace=False)
        latents = self.latents[bucket][0][torch.as_tensor(idx, device=self.latents[bucket][0].device)]
        scenes = [self.scenes[bucket][i] for i in idx]
        return Batch(latents.float(), [random_caption(s, rng, caption_noise) for s in scenes], scenes)
