"""Flow matching (rectified flow, velocity prediction): the training loss and the sampler.

Convention (Wan2.1, SD3): x_sigma = (1 - sigma) * x0 + sigma * noise, sigma in [0, 1], the model
sees timestep = 1000 * sigma and predicts the velocity v = noise - x0. Sampling integrates from
sigma = 1 (pure noise) to 0 with diffusers' FlowMatchEulerDiscreteScheduler or
UniPCMultistepScheduler (flow prediction). `shift` > 1 spends more steps at high noise, which
larger latents need (Wan: 3.0 at 480p, 5.0 at 720p).

Public: `flow_matching_loss` (training), `sample_latents` (the one sampling entry point),
`guided_velocity` (classifier-free guidance in one batched forward), `remix_start` (where a remix
joins the schedule), `GenerationCancelled`.
Fast mode (`fast=FastSampling()`: forecast steps, a step cache and a guidance window) lives in
`model/step_cache.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from torch import nn

from model.fp8 import enable_fp8, fp8_matmuls
from model.step_cache import FastSampling, FirstBlockCache

NUM_TRAIN_TIMESTEPS = 1000
SCHEDULERS = ("unipc", "euler")


class GenerationCancelled(Exception):
    """The per-step callback returned False."""


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The timestep shift of SD3 / Wan: sigma' = shift * sigma / (1 + (shift - 1) * sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_training_sigmas(
    batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
    timestep_sampling: str = "logit_normal", logit_mean: float = 0.0, logit_std: float = 1.0, shift: float = 1.0,
) -> torch.Tensor:
    """Noise levels (B,) in (0, 1) for training: 'logit_normal' (SD3) or 'uniform', then shifted."""
    gen_device = generator.device if generator is not None else device
    if timestep_sampling == "logit_normal":
        u = torch.randn(batch_size, generator=generator, device=gen_device) * logit_std + logit_mean
        sigmas = torch.sigmoid(u)
    elif timestep_sampling == "uniform":
        sigmas = torch.rand(batch_size, generator=generator, device=gen_device)
    else:
        raise ValueError(f"timestep_sampling must be 'logit_normal' or 'uniform', got {timestep_sampling!r}")
    return shift_sigmas(sigmas, shift).to(device)


def flow_matching_loss(
    model: nn.Module,
    latents: torch.Tensor,
    text_states: torch.Tensor,
    text_mask: torch.Tensor | None,
    generator: torch.Generator | None = None,
    timestep_sampling: str = "logit_normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    shift: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """MSE between the predicted and the true velocity at random noise levels.

    latents (B, C, T, H, W): normalised VAE latents (`model.vae.encode_video`); text_states
    (B, L, text_dim) and text_mask (B, L) from `TextEncoder` (keep it differentiable to train the
    encoder too). Returns a scalar (reduction='mean') or per-sample losses (B,) ('none').
    """
    B = latents.shape[0]
    x0 = latents.float()
    gen_device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device)  # (B, C, T, H, W)
    sigmas = sample_training_sigmas(B, generator, x0.device, timestep_sampling, logit_mean, logit_std, shift)  # (B,)
    s = sigmas.view(B, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise  # (B, C, T, H, W)
    dtype = next(model.parameters()).dtype
    pred = model(x_t.to(dtype), sigmas * NUM_TRAIN_TIMESTEPS, text_states.to(dtype), text_mask)  # (B, C, T, H, W)
    per_sample = F.mse_loss(pred.float(), noise - x0, reduction="none").flatten(1).mean(1)  # (B,)
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_sample.mean()


def _make_scheduler(name: str, shift: float):
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction",
            use_flow_sigmas=True, flow_shift=shift, solver_order=2,
        )
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")


# A remix's strength when none is given: on the tiny model the lowest that always takes a new
# colour or shape while keeping the object where it was (bench/remix.py, docs/api.md#remix). The
# gateway's catalogue default (service.catalog.DEFAULT_REMIX_STRENGTH) and `spacetime generate
# --strength` use the same value (a test keeps them equal).
REMIX_STRENGTH = 0.6


def remix_start(num_inference_steps: int, strength: float) -> int:
    """The step a remix starts at: it runs the last round(strength * steps) steps (at least one).

    strength 1 starts from pure noise (the source is ignored); smaller values keep more of it."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    return num_inference_steps - max(1, round(strength * num_inference_steps))


def guided_velocity(
    model: nn.Module,
    x: torch.Tensor,
    timestep: torch.Tensor,
    cond: tuple[torch.Tensor, torch.Tensor | None],
    uncond: tuple[torch.Tensor, torch.Tensor | None] | None,
    guidance_scale: float,
    split: bool = False,
) -> torch.Tensor:
    """Classifier-free guidance with the conditional and unconditional passes in ONE forward
    (batch 2B), or with `split` in two forwards of batch B (what diffusers' WanPipeline does).

    x (B, C, T, H, W) float32; cond/uncond = (states (B, L, d), mask (B, L)); returns (B, C, T, H, W).
    """
    dtype = next(model.parameters()).dtype
    B = x.shape[0]
    if uncond is None or guidance_scale == 1.0:
        states, mask = cond
        t = timestep.expand(B)
        return model(x.to(dtype), t, states, mask).float()
    if split:
        v_cond = model(x.to(dtype), timestep.expand(B), *cond).float()
        v_uncond = model(x.to(dtype), timestep.expand(B), *uncond).float()
        return v_uncond + guidance_scale * (v_cond - v_uncond)
    states = torch.cat([cond[0], uncond[0]])  # (2B, L, d)
    mask = None if cond[1] is None else torch.cat([cond[1], uncond[1]])  # (2B, L)
    v = model(torch.cat([x, x]).to(dtype), timestep.expand(2 * B), states, mask).float()  # (2B, C, T, H, W)
    v_cond, v_uncond = v.chunk(2)
    return v_uncond + guidance_scale * (v_cond - v_uncond)


@torch.no_grad()
def sample_latents(
    model: nn.Module,
    shape: tuple[int, ...],
    cond: tuple[torch.Tensor, torch.Tensor | None],
    uncond: tuple[torch.Tensor, torch.Tensor | None] | None,
    num_inference_steps: int,
    guidance_scale: float,
    generator: torch.Generator | list[torch.Generator],
    scheduler: str = "unipc",
    shift: float = 1.0,
    callback: Callable[[int, int], bool | None] | None = None,
    fast: FastSampling | None = None,
    stats: dict | None = None,
    split_guidance: bool = False,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Integrate the flow from noise to clean latents (B, C, T, H, W) (float32).

    `callback(step, total)` runs after every step (step counts from 1); returning False raises
    GenerationCancelled. The noise comes from `generator`, so a seed fixes the result; a list of
    B generators draws each sample's noise from its own (per-sample seeds in a batch).
    `fast` (None = exact) turns on the step cache, forecast steps and the guidance window (model/step_cache.py),
    and with `fast.fp8` FP8 matmuls in the DiT blocks (model/fp8.py);
    `stats`, if given, receives steps / guided_steps / forwards (steps that ran the model) /
    cached_forwards (of those, the ones that reused the deep blocks) / forecast_steps (no block run).
    `split_guidance`: exact mode only (the step cache keeps the guided pair as one batch), run the
    conditional and unconditional passes as two forwards (same result within float tolerance).
    `init_latents` (B, C, T, H, W) (normalised, as `model.vae.encode_video` gives them) make this a
    remix (SDEdit): they are noised to the noise level of step `remix_start(steps, strength)` with
    the seeded noise, and only the steps from there run (`callback` and `stats` count those).
    """
    device = cond[0].device
    solver = _make_scheduler(scheduler, shift)
    solver.set_timesteps(num_inference_steps, device=device)
    if isinstance(generator, torch.Generator):
        x = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)
    else:  # sample i's noise is what its generator alone would draw for a batch of one
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        x = torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=torch.float32)
                       for g in generator]).to(device)  # (B, C, T, H, W)
    timesteps = solver.timesteps
    if init_latents is not None:
        if init_latents.shape != x.shape:
            raise ValueError(f"init_latents {tuple(init_latents.shape)} do not match the latent shape {tuple(x.shape)}")
        start = remix_start(len(timesteps), strength)
        if start > 0:  # at 0 (strength 1) the sampler starts from pure noise, as without a source
            sigma = solver.sigmas[start].item()
            x = (1 - sigma) * init_latents.float().to(device) + sigma * x  # x_sigma, as flow_matching_loss draws it
            timesteps = timesteps[start:]
            solver.set_begin_index(start)
    net = model if fast is None else FirstBlockCache(model, fast.cache_threshold, fast.max_skips, fast.forecast_order)
    use_fp8 = fast is not None and fast.fp8
    if use_fp8:
        enable_fp8(model)  # idempotent; the layers take the FP8 path only inside fp8_matmuls()
    guided_steps = 0
    with fp8_matmuls(use_fp8):
        for i, t in enumerate(timesteps):
            guided = uncond is not None and guidance_scale != 1.0 and (fast is None or fast.guided(i, len(timesteps)))
            guided_steps += guided
            if fast is not None:
                net.forecast_next = not fast.runs_model(i, len(timesteps))
            v = guided_velocity(net, x, t.reshape(1).float().to(device), cond, uncond if guided else None,
                                guidance_scale, split=split_guidance and fast is None)
            x = solver.step(v, t, x, return_dict=False)[0]  # (B, C, T, H, W)
            if callback is not None and callback(i + 1, len(timesteps)) is False:
                raise GenerationCancelled(f"cancelled after step {i + 1} of {len(timesteps)}")
    if stats is not None:
        forwards = net.steps if fast is not None else len(timesteps)
        stats.update(steps=len(timesteps), guided_steps=guided_steps, forwards=forwards,
                     cached_forwards=net.skipped if fast is not None else 0,
                     forecast_steps=net.forecast if fast is not None else 0, fp8=use_fp8)
    return x
