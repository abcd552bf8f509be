"""Sequence/guidance parallelism and the tile-parallel VAE decode, proven on the CPU with gloo.

Each test forks real processes (torch.multiprocessing, start method "fork": the parent's imports
and models are inherited, so a rank starts in well under a second), joins them in a gloo process
group on 127.0.0.1, and compares what the ranks compute with the single-process result computed
here. An assertion failing inside a rank fails the test with that rank's traceback.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import TINY_PRESET, perturb_zero_init

from model.dit import DiTConfig, VideoDiT
from model.parallel import ParallelVideoDiT, make_mesh, run_ranks
from model.parallel_pipeline import decode_latents_parallel, parallel_generate
from model.pipeline import TextToVideoPipeline
from model.sampling import GenerationCancelled, guided_velocity
from model.vae import decode_latents

# 4 heads: 2 and 4 ranks take the Ulysses all-to-all, 3 ranks the K/V all-gather fallback.
# With the absolute position table (perturbed like the other zero-init tensors): every path embeds
# through VideoDiT.embed_tokens, and the sharded tokens must carry their own positions.
FOUR_HEADS = DiTConfig(patch_size=(1, 2, 2), in_channels=4, out_channels=4, dim=64, ffn_dim=128, num_heads=4,
                       num_layers=2, text_dim=16, freq_dim=32, abs_pos=True)
LATENT = (2, 4, 5, 2, 14)  # (B, C, T, H, W) -> grid (5, 1, 7): N = 35 tokens, divisible by none of 2, 3, 4
TOL = dict(rtol=1e-5, atol=1e-5)  # float32; only the order of a few reductions differs


def _inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(LATENT, generator=gen)
    timestep = torch.tensor([700.0, 700.0])
    context = torch.randn(2, 6, 16, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    return x, timestep, context, mask


@pytest.fixture(scope="module")
def four_head_dit() -> VideoDiT:
    torch.manual_seed(0)
    return perturb_zero_init(VideoDiT(FOUR_HEADS).eval())


def _forward_checks(rank: int, world_size: int, dit: VideoDiT, expected: torch.Tensor, expected_cfg: torch.Tensor) -> None:
    torch.set_num_threads(1)
    x, timestep, context, mask = _inputs()
    with torch.no_grad():
        # Sequence parallel over 2, 3 and 4 ranks (every process takes part in creating every group).
        for size in (2, 3, 4):
            mesh = make_mesh(cfg_size=1, ranks=list(range(size)))
            if mesh is not None:
                out = ParallelVideoDiT(dit, mesh)(x, timestep, context, mask)
                torch.testing.assert_close(out, expected, **TOL, msg=lambda m: f"seq {size}, rank {rank}: {m}")
        # Guidance parallel alone (2 ranks) and guidance 2 x sequence 2 (4 ranks): same guided velocity.
        for ranks in ([0, 1], [0, 1, 2, 3]):
            mesh = make_mesh(cfg_size=2, ranks=ranks)
            if mesh is not None:
                v = guided_velocity(ParallelVideoDiT(dit, mesh), x[:1], timestep[:1], (context[:1], mask[:1]),
                                    (context[1:], mask[1:]), 5.0)
                torch.testing.assert_close(v, expected_cfg, **TOL, msg=lambda m: f"cfg {ranks}, rank {rank}: {m}")
        with pytest.raises(ValueError, match="cannot be split into 3 guidance groups"):
            make_mesh(cfg_size=3)
        odd = make_mesh(cfg_size=1)
        with pytest.raises(ValueError, match="must be divisible by the patch"):
            ParallelVideoDiT(dit, odd)(x[..., :13], timestep, context, mask)


def test_sequence_and_guidance_parallel_equal_one_process(four_head_dit):
    x, timestep, context, mask = _inputs()
    with torch.no_grad():
        expected = four_head_dit(x, timestep, context, mask)
        expected_cfg = guided_velocity(four_head_dit, x[:1], timestep[:1], (context[:1], mask[:1]),
                                       (context[1:], mask[1:]), 5.0)
    assert expected.abs().mean() > 0.01  # a real, input-dependent output
    run_ranks(_forward_checks, 4, four_head_dit, expected, expected_cfg, start_method="fork")


@pytest.fixture(scope="module")
def small_tile_pipeline() -> TextToVideoPipeline:
    """The test preset with small decode tiles (32 px, stride 24), so an 80x48 clip has 8 tiles."""
    pipe = TextToVideoPipeline.from_preset(TINY_PRESET)
    perturb_zero_init(pipe.transformer)
    pipe.vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32,
                           tile_sample_stride_height=24, tile_sample_stride_width=24)
    return pipe


REQUEST = dict(prompt="a red circle moving left", negative_prompt="blurry", num_frames=9, height=48, width=80,
               num_inference_steps=3, guidance_scale=4.0, seed=7)


def _pipeline_checks(rank: int, world_size: int, pipe: TextToVideoPipeline, expected: dict) -> None:
    torch.set_num_threads(1)
    for cfg_size, tiling in ((1, True), (2, True), (2, False)):
        pipe.vae_tiling = tiling
        mesh = make_mesh(cfg_size=cfg_size)
        frames = parallel_generate(pipe, mesh, **REQUEST)
        if rank:
            assert frames is None
            continue
        want = expected[tiling]
        diff = np.abs(frames.astype(int) - want.astype(int))
        assert frames.shape == want.shape
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001, f"cfg {cfg_size}: max {diff.max()}, {(diff > 0).mean():.4%}"
    # A remix: rank 0 encodes the source, every rank starts from the same noised latents.
    pipe.vae_tiling = False
    frames = parallel_generate(pipe, make_mesh(cfg_size=2), **REQUEST, init_video=expected["source"], strength=0.5)
    if rank == 0:
        diff = np.abs(frames.astype(int) - expected["remix"].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001, f"remix: max {diff.max()}, {(diff > 0).mean():.4%}"
    # Cancellation decided on rank 0 stops every rank after the same step.
    mesh = make_mesh(cfg_size=1)
    with pytest.raises(GenerationCancelled, match="after step 2 of 3"):
        parallel_generate(pipe, mesh, **REQUEST, callback=lambda step, total: step < 2)


def test_parallel_pipeline_equals_one_process_remixes_and_cancels_together(small_tile_pipeline):
    pipe = small_tile_pipeline
    expected = {}
    for tiling in (True, False):
        pipe.vae_tiling = tiling
        expected[tiling] = pipe(**REQUEST)
    assert not np.array_equal(expected[True], pipe(**{**REQUEST, "seed": 8}))  # the seed matters
    expected["source"] = pipe(**{**REQUEST, "prompt": "a blue square", "seed": 3})
    expected["remix"] = pipe(**REQUEST, init_video=expected["source"], strength=0.5)
    run_ranks(_pipeline_checks, 2, pipe, expected, start_method="fork")


def _decode_checks(rank: int, world_size: int, vae, latents: torch.Tensor, expected: torch.Tensor) -> None:
    torch.set_num_threads(1)
    for size in (2, 3):
        mesh = make_mesh(ranks=list(range(size)))
        if mesh is None:
            continue
        video = decode_latents_parallel(vae, latents, mesh.group)
        if mesh.rank == 0:
            assert torch.equal(video, expected), f"{size} ranks: max diff {(video - expected).abs().max()}"
        else:
            assert video is None
    dist.barrier()


def test_tile_parallel_decode_equals_the_tiled_decode(small_tile_pipeline):
    vae = copy.deepcopy(small_tile_pipeline.vae)
    latents = torch.randn(1, 4, 3, 6, 10, generator=torch.Generator().manual_seed(3))  # 8 tiles
    with torch.no_grad():
        expected = decode_latents(vae, latents, tiling=True)
        untiled = decode_latents(vae, latents, tiling=False)
    assert expected.shape == (1, 3, 9, 48, 80)
    assert not torch.equal(expected, untiled)  # tiling is really on (seams blended)
    run_ranks(_decode_checks, 3, vae, latents, expected, start_method="fork")
