"""VideoDiT: shapes, adaLN-Zero identity at init, text mask, persistence, FLOP count."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_DIT, tiny_dit

from model import dit
from model.dit import DiTConfig, VideoDiT, count_parameters, flops_per_forward


def _inputs(B: int, T: int, H: int, W: int, L: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, TINY_DIT.in_channels, T, H, W, generator=g)
    t = torch.rand(B, generator=g) * 1000
    ctx = torch.randn(B, L, TINY_DIT.text_dim, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    return x, t, ctx, mask


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 8, 8), (3, 4, 10), (5, 12, 6), (2, 16, 2)])
def test_output_shape_matches_input_for_any_divisible_size(shape):
    model = tiny_dit()
    x, t, ctx, mask = _inputs(2, *shape)
    with torch.no_grad():
        out = model(x, t, ctx, mask)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_patch_in_time_and_a_batch_of_different_prompts():
    cfg = DiTConfig(**{**TINY_DIT.__dict__, "patch_size": (2, 2, 2)})
    model = VideoDiT(cfg).eval()
    x, t, ctx, mask = _inputs(3, 4, 6, 8)
    mask[1, 3:] = False  # prompts of different lengths in one batch
    with torch.no_grad():
        assert model(x, t, ctx, mask).shape == x.shape


def test_indivisible_latent_is_rejected():
    with pytest.raises(ValueError, match="divisible by the patch"):
        tiny_dit()(*_inputs(1, 2, 5, 4))


def test_fresh_blocks_are_identity_and_fresh_model_predicts_zero():
    model = VideoDiT(TINY_DIT).eval()
    x, t, ctx, mask = _inputs(2, 3, 4, 6)
    with torch.no_grad():
        tokens = torch.randn(2, 3 * 2 * 3, TINY_DIT.dim)
        t_emb = model.t_embedder(t)
        t_mod = model.t_projection(torch.nn.functional.silu(t_emb)).unflatten(1, (6, -1))
        rope = model.rope((3, 2, 3), tokens.device)
        ctx_d = model.y_embedder(ctx)
        for block in model.blocks:
            assert torch.equal(block(tokens, ctx_d, mask[:, None, None, :], t_mod, rope), tokens)
        assert torch.equal(model(x, t, ctx, mask), torch.zeros_like(x))
    # ...and a perturbed one is not the identity, so the check above can fail
    perturbed = tiny_dit()
    with torch.no_grad():
        assert not torch.equal(perturbed.blocks[0](tokens, ctx_d, None, t_mod, rope), tokens)


def test_padded_text_tokens_are_ignored_through_the_mask():
    model = tiny_dit()
    x, t, ctx, mask = _inputs(1, 2, 4, 4, L=8)
    mask[:, 5:] = False
    other = ctx.clone()
    other[:, 5:] = torch.randn_like(other[:, 5:]) * 10
    with torch.no_grad():
        same = model(x, t, ctx, mask), model(x, t, other, mask)
        unmasked = model(x, t, other, None)
    torch.testing.assert_close(same[0], same[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(same[0], unmasked, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_dit().train()
    x, t, ctx, mask = _inputs(1, 2, 4, 4)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        model(x, t, ctx, mask).square().mean().backward()
        grads.append(model.blocks[0].attn.q.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = tiny_dit()
    model.save_pretrained(tmp_path / "transformer")
    loaded = VideoDiT.from_pretrained(tmp_path / "transformer")
    assert loaded.config == model.config
    x, t, ctx, mask = _inputs(2, 3, 4, 6)
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx, mask), loaded(x, t, ctx, mask))


def _explicit_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, heads, N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def test_attention_is_swappable_in_one_place(monkeypatch):
    model = tiny_dit()
    x, t, ctx, mask = _inputs(2, 3, 4, 6)
    mask[0, 4:] = False
    with torch.no_grad():
        sdpa = model(x, t, ctx, mask)
        monkeypatch.setattr(dit, "attention", _explicit_attention)
        explicit = model(x, t, ctx, mask)
    torch.testing.assert_close(sdpa, explicit, rtol=1e-4, atol=1e-5)


def test_flop_count_matches_a_measured_forward(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setattr(dit, "attention", _explicit_attention)  # plain matmuls, which the counter sees
    model = tiny_dit()
    x, t, ctx, mask = _inputs(1, 3, 8, 6, L=6)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, ctx, None)
    predicted = flops_per_forward(TINY_DIT, (3, 8, 6), 6)
    assert abs(predicted - counter.get_total_flops()) / counter.get_total_flops() < 0.05
    assert count_parameters(model) > 0


def test_absolute_position_table_starts_as_no_change_and_round_trips(tmp_path):
    """`abs_pos`: a zero-initialised Linear over sin/cos features of each patch's normalised (y, x),
    added to the tokens. Enabling it on trained weights keeps their outputs bit for bit; once it
    is non-zero the output depends on it; it saves and loads, and old configs load without it."""
    model = tiny_dit()
    x, t, ctx, mask = _inputs(2, 3, 4, 6)
    with torch.no_grad():
        before = model(x, t, ctx, mask)
        model.enable_abs_pos()
        assert model.config.abs_pos and model.pos_embedder is not None
        assert torch.equal(model(x, t, ctx, mask), before)
        torch.nn.init.normal_(model.pos_embedder.weight, std=0.1)
        after = model(x, t, ctx, mask)
    assert (after - before).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "transformer")
    loaded = VideoDiT.from_pretrained(tmp_path / "transformer")
    assert loaded.config.abs_pos
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ctx, mask), after)
    # Features: (N, 32), the same at every frame, varying along both y and x.
    feats = dit.abs_pos_features((3, 4, 6), torch.device("cpu")).view(3, 4, 6, -1)
    assert feats.shape[-1] == 4 * dit.ABS_POS_FREQS
    assert torch.equal(feats[0], feats[2])
    assert not torch.equal(feats[0, 0, 0], feats[0, 0, 5]) and not torch.equal(feats[0, 0, 0], feats[0, 3, 0])
    fresh = VideoDiT(dataclasses.replace(TINY_DIT, abs_pos=True))
    assert not fresh.pos_embedder.weight.any()  # a fresh table is zero too
