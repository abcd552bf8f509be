"""Fast mode: spend the transformer only on the denoising steps that need it.

Three approximations, all opt-in per request (`pipe(..., mode="fast")`), all off in exact mode:

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
3. **Forecast steps** (the idea behind FORA and TaylorSeer, here on the model's output): after
   the first `forecast_start` of the schedule, the transformer runs on one step in N; on the
   steps between, no block runs at all and the model's output is forecast from the last step(s)
   that ran it (`forecast_order=0`: reused as it was; 1: extrapolated linearly in the timestep
   from the last two). N is `forecast_every` if given, else the most steps that fit in
   `forecast_gap` of the schedule (0.1: every 2nd step of 20, every 5th of 50): what the tiny
   model tolerates is a fraction of the schedule, not a step count (docs/performance.md). Unlike
   the first-block cache, how many steps this saves does not depend on the weights, so its speed
   is known before a run.

`FirstBlockCache` wraps a `VideoDiT` for ONE sampling run and is called like it; `sample_latents`
builds it when given `FastSampling`. It reuses the model's own parts (embedders, blocks, final
layer), so with `cache_threshold=0` it computes exactly what `VideoDiT.forward` computes (tested).
"""

from __future__ import annotations

import math
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
    # 0.1 with order 0: on the tiny model (shapes evaluator, 92 prompts) every 2nd step of 20 scored
    # 2.2 points above exact, every 5th of 50 1.0 below (every 3rd of 20, a 0.15 gap, lost 6.5).
    forecast_gap: float = 0.1  # run the model at least once per this fraction of the schedule
    forecast_every: int | None = None  # fixed spacing instead of forecast_gap (1: every step runs, no forecasts)
    forecast_start: float = 0.2  # steps i with i/steps < this always run the model
    forecast_order: int = 0  # 0: reuse the last model output; 1: extrapolate the last two linearly in the timestep

    def __post_init__(self) -> None:
        start, end = self.guidance_window
        if not (0.0 <= start <= end <= 1.0):
            raise ValueError(f"guidance_window must satisfy 0 <= start <= end <= 1, got {self.guidance_window}")
        if self.cache_threshold < 0 or self.max_skips < 0:
            raise ValueError("cache_threshold and max_skips must be >= 0")
        if self.forecast_every is not None and self.forecast_every < 1:
            raise ValueError(f"forecast_every must be >= 1, got {self.forecast_every}")
        if not 0.0 <= self.forecast_gap <= 1.0:
            raise ValueError(f"forecast_gap must be in [0, 1], got {self.forecast_gap}")
        if not 0.0 <= self.forecast_start <= 1.0:
            raise ValueError(f"forecast_start must be in [0, 1], got {self.forecast_start}")
        if self.forecast_order not in (0, 1):
            raise ValueError(f"forecast_order must be 0 or 1, got {self.forecast_order}")

    def guided(self, step: int, total: int) -> bool:
        """Whether step `step` (0-based) of `total` runs classifier-free guidance."""
        start, end = self.guidance_window
        return start <= step / total < end

    def spacing(self, total: int) -> int:
        """After the warm-up, the model runs on one step in this many (1: every step)."""
        if self.forecast_every is not None:
            return self.forecast_every
        return max(1, math.floor(self.forecast_gap * total + 1e-9))

    def runs_model(self, step: int, total: int) -> bool:
        """Whether step `step` (0-based) of `total` runs the transformer (False: its output is forecast)."""
        first = math.ceil(self.forecast_start * total)  # steps before this always run
        every = self.spacing(total)
        return every == 1 or step < first or (step - first) % every == 0


class FirstBlockCache(nn.Module):
    """A VideoDiT that skips its deep blocks on steps where the first block barely changed, and
    answers forecast steps without running at all.

    Called as the model: (x (B, C, T, H, W), timestep, context, context_mask) -> velocity. State
    lives for one sampling run. The sampler sets `forecast_next` before a call whose output should
    be forecast (`FastSampling.runs_model`); with no model output yet to forecast from, it runs.
    Counters: `steps` (forwards that ran the model), `skipped` (of those, the ones that reused the
    deep blocks' cache), `forecast` (calls answered by a forecast, no block run).
    """

    def __init__(self, dit: VideoDiT, threshold: float, max_skips: int, forecast_order: int = 0):
        super().__init__()
        self.dit, self.threshold, self.max_skips, self.forecast_order = dit, threshold, max_skips, forecast_order
        self.first_residual: torch.Tensor | None = None  # (B', N, D) at the last fully computed step
        self.rest_residual: torch.Tensor | None = None  # (B', N, D): blocks 1..L-1 output minus their input
        self.run_of_skips = 0
        self.steps = self.skipped = self.forecast = 0
        self.forecast_next = False
        self.outputs: list[tuple[float, torch.Tensor]] = []  # the last two (timestep, output (B', C, T, H, W)) the model made

    def _forecast(self, timestep: torch.Tensor, batch: int) -> torch.Tensor | None:
        """The output at `timestep` extrapolated from the last model outputs (their first `batch`
        rows: a guided step's (cond, uncond) outputs serve a conditional-only step), or None."""
        usable = [(t, out[:batch]) for t, out in self.outputs if out.shape[0] >= batch]
        if not usable:
            return None
        t1, o1 = usable[-1]
        if self.forecast_order == 0 or len(usable) < 2 or usable[-2][0] == t1:
            return o1.clone()
        t0, o0 = usable[-2]
        return o1 + (o1 - o0) * ((float(timestep[0]) - t1) / (t1 - t0))

    def _remember(self, timestep: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        self.outputs = [*self.outputs[-1:], (float(timestep[0]), out)]
        return out

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
        B = x.shape[0]
        # 0. A forecast step runs no block: extrapolate from the model's last outputs.
        if self.forecast_next:
            self.forecast_next = False
            forecast = self._forecast(timestep, B)
            if forecast is not None:
                self.forecast += 1
                return forecast
        # 1. Embeddings and the first block, as VideoDiT.forward.
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
                return self._remember(timestep, dit.unpatchify(dit.final_layer(first + rest, t), grid))

        # 3. Otherwise run every block and remember both residuals.
        h = first
        for block in dit.blocks[1:]:
            h = block(h, context, mask, t_mod, rope)  # (B, N, D)
        self.first_residual, self.rest_residual, self.run_of_skips = residual, h - first, 0
        return self._remember(timestep, dit.unpatchify(dit.final_layer(h, t), grid))  # (B, C_out, T, H, W)
