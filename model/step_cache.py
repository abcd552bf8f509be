"""Fast mode: spend the transformer only on the denoising steps that need it.

Two approximations, both opt-in per request (`pipe(..., mode="fast")`), both off in exact mode:

1. **First-block cache** (the idea behind ParaAttention's FBCache and TeaCache, Liu et al. 2024):
   every step runs the embeddings and the FIRST block. If the first block's residual
   (its output minus its input) changed by less than `cache_threshold` (relative mean absolute
   change) since the last step that ran every block, the remaining blocks are skipped and their
   residual from that step is added again. Adjacent steps of a flow sampler change the latent a
   little, so the deep blocks' contribution changes little too; the first block's change is a
   cheap probe of how much. `max_skips` bounds how many steps in a row may reuse the cache.
2. **Guidance window**: classifier-free guidance (two passes) only on the steps whose position in
   the schedule lies in `guidance_window` (fractions of the step count, [start, end)); the other
   steps run the conditional pass alone. Guidance shapes the layout at high noise; late steps
   refine detail, where the unguided prediction is close to the guided one.

`FirstBlockCache` wraps a `VideoDiT` for ONE sampling run and is called like it; `sample_latents`
builds it when given `FastSampling`. It reuses the model's own parts (embedders, blocks, final
layer), so with `cache_threshold=0` it computes exactly what `VideoDiT.forward` computes (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.dit import VideoDiT


@dataclass(frozen=True)
class FastSampling:
    """Knobs of fast mode; the defaults were chosen on the tiny model (docs/performance.md)."""

    # 0.08: the largest measured threshold that kept the shapes evaluator's adherence within 2 points
    # of exact on the tiny model (0.15 cached more but lost 5.4 points; docs/performance.md).
    cache_threshold: float = 0.08  # reuse the deep blocks' residual below this relative change of the first block's
    max_skips: int = 2  # at most this many cached steps in a row (bounds the drift)
    guidance_window: tuple[float, float] = (0.0, 0.6)  # steps i with start <= i/steps < end run guidance
    fp8: bool = False  # the DiT blocks' linear layers multiply in FP8 (model/fp8.py); off by default

    def __post_init__(self) -> None:
        start, end = self.guidance_window
        if not (0.0 <= start <= end <= 1.0):
            raise ValueError(f"guidance_window must satisfy 0 <= start <= end <= 1, got {self.guidance_window}")
        if self.cache_threshold < 0 or self.max_skips < 0:
            raise ValueError("cache_threshold and max_skips must be >= 0")

    def guided(self, step: int, total: int) -> bool:
        """Whether step `step` (0-based) of `total` runs classifier-free guidance."""
        start, end = self.guidance_window
        return start <= step / total < end


class FirstBlockCache(nn.Module):
    """A VideoDiT that skips its deep blocks on steps where the first block barely changed.

    Called as the model: (x (B, C, T, H, W), timestep, context, context_mask) -> velocity. State
    lives for one sampling run. Counters: `steps` (forwards), `skipped` (forwards that reused the cache).
    """

    def __init__(self, dit: VideoDiT, threshold: float, max_skips: int):
        super().__init__()
        self.dit, self.threshold, self.max_skips = dit, threshold, max_skips
        self.first_residual: torch.Tensor | None = None  # (B', N, D) at the last fully computed step
        self.rest_residual: torch.Tensor | None = None  # (B', N, D): blocks 1..L-1 output minus their input
        self.run_of_skips = 0
        self.steps = self.skipped = 0

    def _cached(self, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cache for a batch of `batch` rows. A guided step's batch is (cond, uncond): its first
        rows serve an unguided step (cond only) of the same prompt."""
        if self.first_residual is None or self.first_residual.shape[0] < batch:
            return None
        return self.first_residual[:batch], self.rest_residual[:batch]

    def forward(
        self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        dit = self.dit
        # 1. Embeddings and the first block, as VideoDiT.forward.
        B = x.shape[0]
        tokens, grid = dit.embed_tokens(x)  # (B, N, D)
        self.steps += 1
        rope = dit.rope(grid, x.device)  # (N, d/2, 2)
        t, t_mod, context, mask = dit.embed_conditions(timestep, context, context_mask, B, tokens.dtype)
        first = dit.blocks[0](tokens, context, mask, t_mod, rope)  # (B, N, D)
        residual = first - tokens  # (B, N, D)

        # 2. Reuse the deep blocks' residual if the first block's changed little since the last full step.
        cached = self._cached(B)
        if cached is not None and self.run_of_skips < self.max_skips and self.threshold > 0:
            prev, rest = cached
            change = (residual.float() - prev.float()).abs().mean() / prev.float().abs().mean().clamp_min(1e-12)
            if change.item() < self.threshold:  # one host sync per step: the decision
                self.run_of_skips += 1
                self.skipped += 1
                return dit.unpatchify(dit.final_layer(first + rest, t), grid)

        # 3. Otherwise run every block and remember both residuals.
        h = first
        for block in dit.blocks[1:]:
            h = block(h, context, mask, t_mod, rope)  # (B, N, D)
        self.first_residual, self.rest_residual, self.run_of_skips = residual, h - first, 0
        return dit.unpatchify(dit.final_layer(h, t), grid)  # (B, C_out, T, H, W)
