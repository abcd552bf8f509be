"""Every model shape we know, in one dict (like DiT's `DiT_models`): name -> Preset.

`spacetime-tiny` is the embedded CPU default (weights trained here, shipped under
`model/weights/spacetime-tiny/`). The Wan2.1 presets are the published production shapes; their
weights are never shipped: an operator points `load_pipeline` at a local Wan2.1-Diffusers folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model.dit import DiTConfig
from model.text_encoder import TextEncoderConfig, wan_text_config
from model.vae import VAEConfig

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"


@dataclass
class SamplingDefaults:
    num_inference_steps: int = 20
    guidance_scale: float = 5.0  # classifier-free guidance; 1.0 disables it (one pass per step)
    scheduler: str = "unipc"  # "unipc" or "euler" (see model/sampling.py)
    shift: float = 1.0  # timestep shift: > 1 spends more steps at high noise (bigger latents)
    fps: int = 8
    num_frames: int = 17  # 4k+1 (causal VAE: first frame, then groups of 4)
    height: int = 128
    width: int = 128


@dataclass
class Preset:
    name: str
    dit: DiTConfig
    text: TextEncoderConfig
    vae: VAEConfig
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    weights_dir: Path | None = None  # shipped weights (save_pretrained folder), if any
    seed: int = 0  # fixed seed for the random-weight build


PRESETS: dict[str, Preset] = {
    "spacetime-tiny": Preset(
        name="spacetime-tiny",
        dit=DiTConfig(patch_size=(1, 2, 2), in_channels=16, out_channels=16, dim=256, ffn_dim=768,
                      num_heads=4, num_layers=8, text_dim=256),
        # Word tokens (model/data/words.txt, 107 entries): a from-scratch encoder learns them far
        # faster than bytes. 32 tokens hold any training caption (<= 63 bytes, so <= 16 words).
        text=TextEncoderConfig(kind="t5", tokenizer="words", max_length=32, use_mask=True,
                               vocab_size=128, d_model=256, d_kv=64, d_ff=384, num_layers=4, num_heads=4),
        # decoder_base_dim=8: a quarter of the decode FLOPs of base 16 (12 vs 47 GFLOP for 2 s at
        # 128x128); flat-coloured shapes need little decoder width, and decode dominated CPU time.
        vae=VAEConfig(base_dim=16, decoder_base_dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=1,
                      temperal_downsample=(False, True, True),
                      latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16),  # training records real stats
        # guidance 3: on the session-6 weights two-object prompts came out both right 82.5 % at CFG 3
        # against 77.5 % at 5, held-out single prompts 122 against 121 of 128 (docs/training.md)
        defaults=SamplingDefaults(num_inference_steps=20, guidance_scale=3.0, scheduler="unipc", shift=2.0,
                                  fps=8, num_frames=17, height=128, width=128),
        weights_dir=WEIGHTS_ROOT / "spacetime-tiny",
    ),
    "wan2.1-1.3b": Preset(
        name="wan2.1-1.3b",
        dit=DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, text_dim=4096),
        text=wan_text_config(),
        vae=VAEConfig(),  # AutoencoderKLWan defaults are Wan2.1's VAE
        defaults=SamplingDefaults(num_inference_steps=50, guidance_scale=5.0, scheduler="unipc", shift=3.0,
                                  fps=16, num_frames=81, height=480, width=832),
    ),
    "wan2.1-14b": Preset(
        name="wan2.1-14b",
        dit=DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096),
        text=wan_text_config(),
        vae=VAEConfig(),
        defaults=SamplingDefaults(num_inference_steps=50, guidance_scale=5.0, scheduler="unipc", shift=5.0,
                                  fps=16, num_frames=81, height=720, width=1280),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or pass a local folder")
    return PRESETS[name]


def preset_stats(name: str) -> dict[str, float]:
    """Parameter counts (built on the meta device, so free even for 14B) and DiT FLOPs per
    denoising step at the preset's native size (x2 for the batched CFG pass)."""
    import torch
    from diffusers import AutoencoderKLWan
    from transformers import T5EncoderModel, UMT5EncoderModel

    from model.dit import VideoDiT, count_parameters, flops_per_forward

    preset = get_preset(name)
    d = preset.defaults
    with torch.device("meta"):
        dit = count_parameters(VideoDiT(preset.dit))
        encoder_cls = UMT5EncoderModel if preset.text.kind == "umt5" else T5EncoderModel
        text = count_parameters(encoder_cls(preset.text.t5_config()))
        vae = count_parameters(AutoencoderKLWan(**preset.vae.kwargs()))
    t_ratio = 2 ** sum(preset.vae.temperal_downsample)
    s_ratio = 2 ** (len(preset.vae.dim_mult) - 1)
    latent = ((d.num_frames - 1) // t_ratio + 1, d.height // s_ratio, d.width // s_ratio)
    pt, ph, pw = preset.dit.patch_size
    tokens = (latent[0] // pt) * (latent[1] // ph) * (latent[2] // pw)
    forward = flops_per_forward(preset.dit, latent, preset.text.max_length)
    return {"dit_params": dit, "text_params": text, "vae_params": vae, "tokens": tokens,
            "latent": latent, "flops_per_step": forward * (2 if d.guidance_scale > 1 else 1),
            "steps": d.num_inference_steps}


def presets_table() -> str:
    rows = ["| preset | native clip | DiT params | text encoder | VAE | tokens | DiT TFLOP / step (CFG) | steps |",
            "|---|---|---|---|---|---|---|---|"]
    for name, preset in PRESETS.items():
        s, d = preset_stats(name), preset.defaults
        rows.append(
            f"| `{name}` | {d.num_frames} frames {d.width}x{d.height} @ {d.fps} fps | {s['dit_params'] / 1e6:,.1f} M "
            f"| {s['text_params'] / 1e6:,.1f} M | {s['vae_params'] / 1e6:,.1f} M | {s['tokens']:,} "
            f"| {s['flops_per_step'] / 1e12:,.3f} | {s['steps']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(presets_table())
