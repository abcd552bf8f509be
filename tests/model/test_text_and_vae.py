"""Text encoder (ByT5 tokens, mask, zero padding, Wan mode) and VAE helpers (latent scaling, tiling)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_PRESET

from model.text_encoder import TextEncoder, build_text_encoder
from model.vae import (
    build_vae, decode_latents, encode_video, latent_shape, set_latent_stats, to_uint8_frames, use_fast_cpu_kernels,
)


@pytest.fixture(scope="module")
def text_encoder():
    return build_text_encoder(TINY_PRESET.text, seed=0)


def test_prompts_pad_to_max_length_with_mask_and_zero_states(text_encoder):
    states, mask = text_encoder.encode(["a red circle", "", "x" * 500])
    L = TINY_PRESET.text.max_length
    assert states.shape == (3, L, TINY_PRESET.text.d_model) and mask.shape == (3, L)
    assert mask[0].sum() == len("a red circle") + 1  # bytes + </s>
    assert mask[1].sum() == 1  # the empty prompt is just </s>: the unconditional input
    assert mask[2].all()  # truncated to max_length
    assert (states[~mask] == 0).all() and (states[mask] != 0).any()


def test_wan_mode_attends_to_zero_padding(text_encoder):
    wan_like = TextEncoder(dataclasses.replace(TINY_PRESET.text, use_mask=False), text_encoder.encoder,
                           text_encoder.tokenizer)
    states, mask = wan_like.encode(["a red circle"])
    assert mask.all()
    assert (states[0, len("a red circle") + 1:] == 0).all()


def test_encoder_is_differentiable_and_round_trips(text_encoder, tmp_path):
    ids, mask = text_encoder.tokenize(["a blue square"])
    states, _ = text_encoder(ids, mask)
    states.sum().backward()
    assert text_encoder.encoder.shared.weight.grad is not None
    text_encoder.zero_grad()
    text_encoder.save_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    loaded = TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    assert loaded.config == text_encoder.config
    with torch.no_grad():
        assert torch.equal(loaded.encode(["a blue square"])[0], text_encoder.encode(["a blue square"])[0])


def test_word_position_table_starts_as_no_change_then_orders_words_and_round_trips(tmp_path):
    """`abs_pos`: a learned (max_length, d_model) table added to the token embeddings. Enabling it
    on trained weights keeps their outputs bit for bit; once non-zero, the same word at another
    position encodes differently; it saves beside the encoder and loads; the shared preset config
    is not changed by enabling it."""
    text = build_text_encoder(TINY_PRESET.text, seed=0)
    prompts = ["a red circle and a blue square", "a blue square and a red circle"]
    with torch.no_grad():
        before = text.encode(prompts)[0]
        text.enable_abs_pos()
        assert text.config.abs_pos and not TINY_PRESET.text.abs_pos
        assert torch.equal(text.encode(prompts)[0], before)
        text.enable_abs_pos()  # a no-op the second time
        torch.nn.init.normal_(text.pos_embedding, std=1.0)
        after = text.encode(prompts)[0]
    assert (after - before).abs().max() > 1e-2
    ids, mask = text.tokenize(prompts)
    states, _ = text(ids, mask)
    states.sum().backward()
    assert text.pos_embedding.grad is not None and text.pos_embedding.grad.abs().sum() > 0  # it trains
    text.zero_grad()
    text.save_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer", dtype=torch.float16)
    assert (tmp_path / "text_encoder" / "positions.safetensors").exists()
    loaded = TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    assert loaded.config.abs_pos
    assert torch.equal(loaded.pos_embedding.detach(), text.pos_embedding.detach().half().float())
    (tmp_path / "text_encoder" / "positions.safetensors").unlink()
    with pytest.raises(FileNotFoundError):  # a config that names the table needs it
        TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")


def test_word_position_table_can_start_as_sinusoids():
    """`enable_abs_pos(init_scale)`: a sinusoid table at that fraction of the word embeddings' RMS,
    one distinct row per position, so the encoder sees word order from the first step."""
    from model.text_encoder import sinusoid_table

    table = sinusoid_table(32, 16)
    assert table.shape == (32, 16) and abs(table.pow(2).mean().sqrt().item() - 1.0) < 1e-3
    assert len({tuple(row.tolist()) for row in table.round(decimals=4)}) == 32
    text = build_text_encoder(TINY_PRESET.text, seed=0)
    with torch.no_grad():
        before = text.encode(["a red circle"])[0]
        text.enable_abs_pos(init_scale=0.5)
        rms = text.encoder.get_input_embeddings().weight.pow(2).mean().sqrt()
        assert abs(text.pos_embedding.pow(2).mean().sqrt().item() - 0.5 * rms.item()) < 1e-3
        assert not torch.equal(text.encode(["a red circle"])[0], before)  # outputs change, by design


def test_fresh_encoder_needs_the_file_free_tokenizer():
    with pytest.raises(ValueError, match="'words' or 'byt5'"):
        build_text_encoder(dataclasses.replace(TINY_PRESET.text, tokenizer="folder"))


@pytest.fixture(scope="module")
def vae():
    return build_vae(TINY_PRESET.vae, seed=0)


def test_latent_scaling_round_trips_through_the_config(vae):
    assert latent_shape(17, 128, 96, vae) == (5, 16, 12)
    video = torch.rand(1, 3, 5, 32, 16) * 2 - 1
    with torch.no_grad():
        raw = vae.encode(video).latent_dist.mode()
        normalised = encode_video(vae, video, sample=False)
        mean = torch.tensor(TINY_PRESET.vae.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(TINY_PRESET.vae.latents_std).view(1, -1, 1, 1, 1)
        torch.testing.assert_close(normalised, (raw - mean) / std)
        decoded = decode_latents(vae, normalised)
        torch.testing.assert_close(decoded, vae.decode(raw).sample)
    assert decoded.shape == video.shape
    frames = to_uint8_frames(decoded[0])
    assert frames.shape == (5, 32, 16, 3) and frames.dtype.name == "uint8"


def test_set_latent_stats_is_saved_with_the_vae(tmp_path):
    vae = build_vae(TINY_PRESET.vae, seed=0)
    set_latent_stats(vae, torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 0.5, 2.0, 2.0]))
    vae.save_pretrained(str(tmp_path))
    from model.vae import load_vae

    assert load_vae(tmp_path).config.latents_std == [0.5, 0.5, 2.0, 2.0]


def test_tiled_decode_covers_the_whole_frame(vae):
    vae.tile_sample_min_height = vae.tile_sample_min_width = 32  # small tiles so a small frame is tiled
    vae.tile_sample_stride_height = vae.tile_sample_stride_width = 16
    z = torch.randn(1, 4, 2, 8, 12)
    with torch.no_grad():
        tiled = decode_latents(vae, z, tiling=True)
        assert vae.use_tiling
        whole = decode_latents(vae, z, tiling=False)
    assert tiled.shape == whole.shape == (1, 3, 5, 64, 96)
    assert not torch.equal(tiled, whole)  # the tiled path really ran (blended seams)


def test_decode_tiles_when_an_untiled_decode_would_not_fit(monkeypatch):
    from types import SimpleNamespace

    from model.vae import decode_needs_tiling

    wan = SimpleNamespace(config=SimpleNamespace(base_dim=96, decoder_base_dim=None), dtype=torch.float32)
    # Off CUDA there is no free-memory reading: the frame-area rule.
    assert not decode_needs_tiling(wan, 1, 512, 512, "cpu")
    assert decode_needs_tiling(wan, 1, 480, 832, "cpu")
    # On CUDA: the untiled peak (~24 KB per pixel for Wan's VAE in float32) against half the free memory.
    free = 40e9
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free), int(80e9)))
    assert not decode_needs_tiling(wan, 1, 480, 832, "cuda")    # ~9.6 GB of 20
    assert decode_needs_tiling(wan, 1, 720, 1280, "cuda")       # ~22.1 GB of 20
    assert decode_needs_tiling(wan, 3, 480, 832, "cuda")        # a batch of 3 clips decodes at once
    half = SimpleNamespace(config=wan.config, dtype=torch.bfloat16)
    assert not decode_needs_tiling(half, 1, 720, 1280, "cuda")  # half the bytes per element
    narrow = SimpleNamespace(config=SimpleNamespace(base_dim=96, decoder_base_dim=24), dtype=torch.float32)
    assert not decode_needs_tiling(narrow, 3, 720, 1280, "cuda")  # a quarter of the decoder width
    free = 8e9
    assert decode_needs_tiling(wan, 1, 480, 832, "cuda")        # a busy GPU tiles


def test_fast_cpu_kernels_compute_the_same_decode_and_encode():
    import copy

    plain = build_vae(TINY_PRESET.vae, seed=1)
    fast = use_fast_cpu_kernels(copy.deepcopy(plain))
    z = torch.randn(1, 4, 2, 4, 6)
    video = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(fast.decode(z).sample, plain.decode(z).sample, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast.encode(video).latent_dist.mode(), plain.encode(video).latent_dist.mode(),
                                   rtol=1e-4, atol=1e-5)
    loss = fast.decode(z).sample.square().mean()  # with autograd on, the original kernels run
    loss.backward()
    assert fast.decoder.conv_in.weight.grad is not None


def test_fast_kernels_survive_a_deep_copy():
    import copy

    fast = use_fast_cpu_kernels(build_vae(TINY_PRESET.vae, seed=1))
    twin = copy.deepcopy(fast)
    with torch.no_grad():
        twin.decoder.conv_in.weight.add_(1.0)  # the copy must compute with its own module, not the original's
        z = torch.randn(1, 4, 1, 4, 4)
        assert not torch.allclose(twin.decode(z).sample, fast.decode(z).sample)
    assert twin.decoder.conv_in._conv_forward.__self__ is twin.decoder.conv_in
