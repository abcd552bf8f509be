"""The video VAE: diffusers' `AutoencoderKLWan` (causal 3D, 4x8x8 compression) and latent scaling.

Pixels (B, 3, T, H, W) in [-1, 1] with T = 4k+1 <-> latents (B, z_dim, k+1, H/8, W/8). The DiT
sees normalised latents `(z - latents_mean) / latents_std` (per channel, as Wan); both numbers
live in the VAE's own config.json, so a trained VAE carries its statistics with it.

Memory: the Wan decoder already runs one latent frame at a time with a causal cache (temporal
chunking is built in), and `tiling=True` additionally splits each frame into overlapping spatial
tiles, so long and large clips decode within memory.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan


@dataclass
class VAEConfig:
    base_dim: int = 96
    decoder_base_dim: int | None = None  # None: same as base_dim
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # len 4 -> three 2x spatial downsamples = 8x
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # two 2x temporal downsamples = 4x
    latents_mean: tuple[float, ...] | None = None  # None: the class default (Wan2.1's statistics)
    latents_std: tuple[float, ...] | None = None

    def kwargs(self) -> dict:
        out = dict(
            base_dim=self.base_dim, decoder_base_dim=self.decoder_base_dim, z_dim=self.z_dim,
            dim_mult=list(self.dim_mult), num_res_blocks=self.num_res_blocks,
            temperal_downsample=list(self.temperal_downsample),
        )
        if self.latents_mean is not None:
            out["latents_mean"] = list(self.latents_mean)
        if self.latents_std is not None:
            out["latents_std"] = list(self.latents_std)
        return out


def build_vae(cfg: VAEConfig, seed: int | None = None) -> AutoencoderKLWan:
    """A fresh (random) AutoencoderKLWan of the configured shape."""
    if seed is not None:
        torch.manual_seed(seed)
    return AutoencoderKLWan(**cfg.kwargs()).eval()


def load_vae(folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> AutoencoderKLWan:
    vae = AutoencoderKLWan.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    return vae.to(device).eval()


def latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) shaped (1, C, 1, 1, 1) on `like`'s device/dtype."""
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=like.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=like.device).view(1, -1, 1, 1, 1)
    return mean, std


def set_latent_stats(vae: AutoencoderKLWan, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Record measured per-channel latent statistics (after VAE training) in the VAE's config."""
    vae.register_to_config(latents_mean=[float(m) for m in mean.flatten()], latents_std=[float(s) for s in std.flatten()])


def latent_shape(num_frames: int, height: int, width: int, vae: AutoencoderKLWan) -> tuple[int, int, int]:
    """Pixel clip size -> latent (T, H, W) for 4x temporal (causal: first frame alone) and 8x spatial."""
    t_ratio = 2 ** sum(vae.config.temperal_downsample)
    s_ratio = 2 ** (len(vae.config.dim_mult) - 1)
    return (num_frames - 1) // t_ratio + 1, height // s_ratio, width // s_ratio


def encode_video(vae: AutoencoderKLWan, video: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
    """Pixels (B, 3, T, H, W) in [-1, 1] -> normalised latents (B, z_dim, T', H/8, W/8).

    `sample=True` draws from the posterior (training); False takes its mean.
    """
    dist = vae.encode(video.to(vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mode()  # (B, z_dim, T', H', W')
    mean, std = latent_stats(vae, z)
    return ((z.float() - mean) / std).to(z.dtype)


# Peak memory of an untiled decode per output pixel of one frame, for the Wan2.1 VAE (decoder
# width 96) in float32: 9.41 GB at 480x832 and 21.70 GB at 720x1280 on an H200 (bench/vae_decode.py,
# 81 frames), i.e. 23.6 KB per pixel either way; the frame count does not matter (the decoder runs
# in causal chunks of frames). Scaled by decoder width and element size for other VAEs.
UNTILED_BYTES_PER_PX = 24_000
TILING_ABOVE_PX = 512 * 512  # off CUDA (no free-memory reading), tile frames larger than this


def decode_needs_tiling(vae: AutoencoderKLWan, batch: int, height: int, width: int,
                        device: torch.device | str) -> bool:
    """Whether to decode in spatial tiles: on CUDA, when the untiled decode's estimated peak would
    take more than half the free memory (tiles cost time: 5.34 against 2.78 s at 480p, 81 frames,
    H200); elsewhere, frames larger than TILING_ABOVE_PX."""
    device = torch.device(device)
    if device.type != "cuda":
        return height * width > TILING_ABOVE_PX
    cfg = vae.config
    width_ratio = (getattr(cfg, "decoder_base_dim", None) or cfg.base_dim) / 96
    element = torch.finfo(vae.dtype).bits / 32
    need = UNTILED_BYTES_PER_PX * width_ratio * element * batch * height * width
    free, _ = torch.cuda.mem_get_info(device)
    return need > 0.5 * free


def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor, tiling: bool = False) -> torch.Tensor:
    """Normalised latents (B, z_dim, T', H', W') -> pixels (B, 3, T, H, W) in [-1, 1]."""
    mean, std = latent_stats(vae, latents)
    z = (latents.float() * std + mean).to(vae.dtype)
    if tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    return vae.decode(z).sample  # (B, 3, T, H, W)


def _fast_path(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def _conv_forward_onednn(self: torch.nn.Conv3d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if _fast_path(x) and self.padding_mode == "zeros":
        return torch.ops.aten.mkldnn_convolution(x.contiguous(), weight, bias, self.padding, self.stride,
                                                 self.dilation, self.groups)
    return torch.nn.Conv3d._conv_forward(self, x, weight, bias)


def _rms_norm_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not _fast_path(x):
        return type(self).forward(self, x)
    norm = x.square().sum(1, keepdim=True).sqrt().clamp_min(1e-12)  # F.normalize(x, dim=1), eps included
    return x / norm * self.scale * self.gamma + self.bias


def use_fast_cpu_kernels(vae: AutoencoderKLWan) -> AutoencoderKLWan:
    """Route the VAE's batch-1 CPU inference through oneDNN kernels (same numbers, ~5x faster decode).

    PyTorch picks its convolution backend with a 2D-minded heuristic (N*C*H*W > 20480 for
    batch 1) that sends thin 5D Conv3d inputs to the naive `slow_conv3d`; and `F.normalize`
    over the channel axis of a 5D tensor is a slow strided reduction. Both only on CPU float32
    without autograd; anything else (GPU, half precision, training) takes the original path.
    Methods are bound per instance, so deep copies stay bound to themselves.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    for module in vae.modules():
        if isinstance(module, torch.nn.Conv3d):
            module._conv_forward = types.MethodType(_conv_forward_onednn, module)
        elif isinstance(module, WanRMS_norm) and module.channel_first:
            module.forward = types.MethodType(_rms_norm_forward, module)
    return vae


def from_uint8_frames(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Numpy uint8 (T, H, W, 3) -> one clip (3, T, H, W) float32 in [-1, 1]: `to_uint8_frames` reversed."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(device)  # (a view unless strides are negative)
    return pixels.permute(3, 0, 1, 2).float() / 127.5 - 1.0


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """One clip (3, T, H, W) in [-1, 1] -> numpy uint8 (T, H, W, 3)."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, T, H, W)
    return frames.permute(1, 2, 3, 0).cpu().numpy()  # (T, H, W, 3)
