"""Prompt -> frames on every rank of a mesh: parallel denoising and a tile-parallel VAE decode.

`parallel_generate(pipe, mesh, ...)` is `TextToVideoPipeline.__call__` for N processes: each rank
holds the whole pipeline, encodes the prompt itself (cheap, replicated), draws the same seeded
noise and denoises with `ParallelVideoDiT`; all ranks hold identical latents after every step.
The callback runs on the mesh's rank 0 only and its answer is broadcast every step, so a
cancellation stops every rank within the same step.

VAE decode: the Wan VAE is causal in time (each latent frame's decode reads a cache of the
previous frames' features), so splitting by frames cannot be exact without decoding all earlier
frames anyway. It is split by spatial tiles instead, the tiles of diffusers' own `tiled_decode`
(overlapping, blended): rank r decodes tiles r, r+P, ...; one all-gather brings them to rank 0,
which blends them exactly as diffusers does. The result equals the single-process tiled decode
(tested); tiling itself differs from an untiled decode by the usual seam blending, which is why
the split is used exactly where the single-process pipeline tiles (frames above 512x512, or
`pipe.vae_tiling = True`) and rank 0 decodes alone otherwise.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from model.parallel import Mesh, ParallelVideoDiT, all_gather_stack
from model.pipeline import MAX_SEED, TextToVideoPipeline, check_init_video
from model.sampling import REMIX_STRENGTH, sample_latents
from model.vae import TILING_ABOVE_PX, decode_latents, latent_shape, latent_stats, to_uint8_frames


def _tiles(vae, height: int, width: int) -> list[tuple[int, int]]:
    """Top-left latent corners of diffusers' decode tiles, in its row-major order."""
    r = vae.spatial_compression_ratio
    return [(i, j) for i in range(0, height, vae.tile_sample_stride_height // r)
            for j in range(0, width, vae.tile_sample_stride_width // r)]


def tiles_needed(vae, latent_hw: tuple[int, int]) -> bool:
    """Whether diffusers' decode (tiling enabled) would tile a latent of this size."""
    r = vae.spatial_compression_ratio
    h, w = latent_hw
    return w > vae.tile_sample_min_width // r or h > vae.tile_sample_min_height // r


@torch.no_grad()
def decode_latents_parallel(vae, latents: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor | None:
    """Normalised latents (B, z, T', H', W') on every rank -> pixels (B, 3, T, H, W) on group rank 0.

    Equals `decode_latents(vae, latents, tiling=True)`; other ranks return None.
    """
    if vae.config.patch_size is not None:
        raise ValueError("tile-parallel decode supports the Wan2.1 VAE (patch_size None) only")
    mean, std = latent_stats(vae, latents)
    z = (latents.float() * std + mean).to(vae.dtype)
    B, _, T, H, W = z.shape
    P = 1 if group is None else dist.get_world_size(group)
    rank = 0 if group is None else dist.get_rank(group)
    r = vae.spatial_compression_ratio
    T_px = (T - 1) * 2 ** sum(vae.config.temperal_downsample) + 1
    tile_h, tile_w = vae.tile_sample_min_height // r, vae.tile_sample_min_width // r  # latent tile size
    tiles = _tiles(vae, H, W)
    slots = math.ceil(len(tiles) / P)
    # 1. My tiles, each padded into a fixed-size slot so one all-gather carries them all.
    buf = torch.zeros(slots, B, 3, T_px, tile_h * r, tile_w * r, dtype=vae.dtype, device=z.device)
    for slot, (i, j) in enumerate(tiles[rank::P]):
        vae.clear_cache()
        frames = []
        for k in range(T):  # one latent frame at a time through the causal cache, as diffusers
            vae._conv_idx = [0]
            tile = vae.post_quant_conv(z[:, :, k:k + 1, i:i + tile_h, j:j + tile_w])
            frames.append(vae.decoder(tile, feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=(k == 0)))
        decoded = torch.cat(frames, dim=2)  # (B, 3, T_px, h_px, w_px)
        buf[slot, :, :, :, :decoded.shape[3], :decoded.shape[4]] = decoded
    vae.clear_cache()
    gathered = buf[None] if group is None else all_gather_stack(buf, group)  # (P, slots, B, 3, T_px, th, tw)
    if rank != 0:
        return None
    # 2. Blend on rank 0 exactly as AutoencoderKLWan.tiled_decode does.
    stride_h, stride_w = vae.tile_sample_stride_height, vae.tile_sample_stride_width
    blend_h, blend_w = vae.tile_sample_min_height - stride_h, vae.tile_sample_min_width - stride_w
    rows: list[list[torch.Tensor]] = []
    for index, (i, j) in enumerate(tiles):
        h_px, w_px = min(tile_h, H - i) * r, min(tile_w, W - j) * r
        tile = gathered[index % P, index // P, :, :, :, :h_px, :w_px].clone()
        if j == 0:
            rows.append([])
        rows[-1].append(tile)
    result_rows = []
    for a, row in enumerate(rows):
        out_row = []
        for b, tile in enumerate(row):
            if a > 0:
                tile = vae.blend_v(rows[a - 1][b], tile, blend_h)
            if b > 0:
                tile = vae.blend_h(row[b - 1], tile, blend_w)
            out_row.append(tile[:, :, :, :stride_h, :stride_w])
        result_rows.append(torch.cat(out_row, dim=-1))
    return torch.cat(result_rows, dim=3)[:, :, :, :H * r, :W * r].clamp(-1.0, 1.0)


def _broadcast_from_first(value: int, mesh: Mesh, device: torch.device) -> int:
    flag = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(flag, src=mesh.ranks[0], group=mesh.group)
    return int(flag.item())


@torch.inference_mode()
def parallel_generate(
    pipe: TextToVideoPipeline, mesh: Mesh, prompt: str, negative_prompt: str = "",
    num_frames: int | None = None, height: int | None = None, width: int | None = None, fps: int | None = None,
    num_inference_steps: int | None = None, guidance_scale: float | None = None, seed: int | None = None,
    callback: Callable[[int, int], bool | None] | None = None,
    init_video: np.ndarray | None = None, strength: float = REMIX_STRENGTH,
) -> np.ndarray | None:
    """Every rank of `mesh` calls this with the same request; mesh rank 0 gets uint8 (T, H, W, 3), the others None.

    `init_video` + `strength` make it a remix, as `TextToVideoPipeline.__call__`: mesh rank 0
    encodes the clip and the latents go to every rank from there (one encode, identical latents).

    `callback` is called on mesh rank 0 only; returning False cancels every rank
    (GenerationCancelled is raised on all of them).
    """
    d = pipe.defaults
    # 1. Defaults and validation (every rank raises the same error), agree on a seed.
    num_frames, height, width, fps, steps, guidance = pipe.resolve_request(
        prompt, negative_prompt, num_frames, height, width, fps, num_inference_steps, guidance_scale, seed, callback)
    if init_video is not None:
        check_init_video(init_video, strength, num_frames, height, width)
    device = pipe.device
    seed = _broadcast_from_first(secrets.randbelow(MAX_SEED) if seed is None else int(seed), mesh, device)

    # 2. Encode the prompt and the negative prompt (replicated).
    prompts = [prompt] if guidance == 1 else [prompt, negative_prompt]
    states, mask = pipe.text_encoder.encode(prompts, device)  # (1|2, L, d), (1|2, L)
    cond = (states[:1], mask[:1])
    uncond = None if guidance == 1 else (states[1:], mask[1:])

    # 3. Denoise together; the cancel decision travels from rank 0 every step.
    def agreed_callback(step: int, total: int) -> bool:
        keep_going = 1
        if mesh.rank == 0 and callback is not None:
            keep_going = int(callback(step, total) is not False)
        return bool(_broadcast_from_first(keep_going, mesh, device))

    generator = torch.Generator(device=device).manual_seed(seed)
    shape = (1, pipe.vae.config.z_dim, *latent_shape(num_frames, height, width, pipe.vae))
    init_latents = None
    if init_video is not None:
        init_latents = pipe.encode_frames(init_video) if mesh.rank == 0 else torch.empty(shape, device=device)
        dist.broadcast(init_latents, src=mesh.ranks[0], group=mesh.group)
    latents = sample_latents(
        ParallelVideoDiT(pipe.transformer, mesh), shape, cond, uncond, steps, float(guidance), generator,
        scheduler=d.scheduler, shift=d.shift, callback=agreed_callback, init_latents=init_latents, strength=strength,
    )  # (1, z, T', H', W'), identical on every rank

    # 4. Decode: split by tiles for frames above TILING_ABOVE_PX (the ranks share the tiles), else on
    # rank 0 alone and untiled.
    tiling = pipe.vae_tiling if pipe.vae_tiling is not None else height * width > TILING_ABOVE_PX
    if tiling and tiles_needed(pipe.vae, latents.shape[-2:]):
        video = decode_latents_parallel(pipe.vae, latents, mesh.group)
    else:
        video = decode_latents(pipe.vae, latents, tiling=False) if mesh.rank == 0 else None
    return None if video is None else to_uint8_frames(video[0])
