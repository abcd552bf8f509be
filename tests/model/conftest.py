"""Tiny real model configs for the model tests (CPU, seeded, seconds to build)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.dit import DiTConfig, VideoDiT
from model.pipeline import TextToVideoPipeline
from model.presets import Preset, SamplingDefaults
from model.text_encoder import TextEncoderConfig
from model.vae import VAEConfig

TINY_DIT = DiTConfig(patch_size=(1, 2, 2), in_channels=4, out_channels=4, dim=32, ffn_dim=64, num_heads=2,
                     num_layers=2, text_dim=16, freq_dim=32)
TINY_PRESET = Preset(
    name="test-tiny",
    dit=TINY_DIT,
    text=TextEncoderConfig(max_length=24, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2),
    vae=VAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1,
                  latents_mean=(0.1, -0.2, 0.0, 0.3), latents_std=(1.5, 0.5, 1.0, 2.0)),
    defaults=SamplingDefaults(num_inference_steps=3, guidance_scale=4.0, scheduler="unipc", shift=1.5,
                              fps=8, num_frames=5, height=32, width=48),
)


def perturb_zero_init(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Give adaLN-Zero's zero tensors small random values, so prompts and guidance matter (like a trained model)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 0 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def tiny_dit(seed: int = 0, perturbed: bool = True) -> VideoDiT:
    torch.manual_seed(seed)
    model = VideoDiT(TINY_DIT).eval()
    return perturb_zero_init(model, seed) if perturbed else model


@pytest.fixture
def tiny_pipeline() -> TextToVideoPipeline:
    pipe = TextToVideoPipeline.from_preset(TINY_PRESET)
    perturb_zero_init(pipe.transformer)
    return pipe


@pytest.fixture(autouse=True)
def _one_thread():
    """Our test tensors are tiny: one intra-op thread is faster and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
