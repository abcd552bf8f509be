"""Flow matching: batched guidance, the samplers' convention, the training loss, cancellation."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_DIT, tiny_dit
from torch import nn

from model.sampling import (
    GenerationCancelled, flow_matching_loss, guided_velocity, sample_latents, sample_training_sigmas, shift_sigmas,
)


def _text(B: int, L: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:, L // 2:] = False
    return torch.randn(B, L, TINY_DIT.text_dim, generator=g), mask


def test_batched_guidance_equals_two_separate_passes():
    model = tiny_dit()
    x = torch.randn(1, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([640.0])
    cond, uncond = _text(1, seed=1), _text(1, seed=2)
    with torch.no_grad():
        batched = guided_velocity(model, x, t, cond, uncond, 5.0)
        v_cond = model(x, t, *cond)
        v_uncond = model(x, t, *uncond)
    separate = v_uncond + 5.0 * (v_cond - v_uncond)
    assert not torch.allclose(v_cond, v_uncond)  # guidance has something to do
    torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        split = guided_velocity(model, x, t, cond, uncond, 5.0, split=True)
    torch.testing.assert_close(split, separate, rtol=1e-5, atol=1e-5)


def test_split_guidance_samples_the_same_latents_in_exact_mode_only():
    model = tiny_dit()
    cond, uncond = _text(1, seed=1), _text(1, seed=2)
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    run = lambda **kw: sample_latents(model, (1, 4, 3, 4, 6), cond, uncond, 3, 5.0,
                                      torch.Generator().manual_seed(0), scheduler="euler", **kw)
    joint = run()
    assert calls == [2, 2, 2]
    calls.clear()
    torch.testing.assert_close(run(split_guidance=True), joint, rtol=1e-5, atol=1e-5)
    assert calls == [1, 1] * 3


class Oracle(nn.Module):
    """The exact velocity towards a known clean latent: v = (x - x0) / sigma."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, timestep, context, mask=None):
        sigma = (timestep / 1000).view(-1, 1, 1, 1, 1).clamp_min(1e-4)
        return (x - self.x0) / sigma


@pytest.mark.parametrize("scheduler", ["euler", "unipc"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sampler_follows_the_flow_convention_to_the_clean_latent(scheduler, shift):
    x0 = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    out = sample_latents(Oracle(x0), x0.shape, _text(1), None, 8, 1.0, torch.Generator().manual_seed(0),
                         scheduler=scheduler, shift=shift)
    # UniPC hands the model integer timesteps, so the oracle's sigma is off by < 0.001: small slack
    tol = 1e-4 if scheduler == "euler" else 1e-2
    torch.testing.assert_close(out, x0, rtol=tol, atol=tol)


def test_seeded_sampling_is_bit_identical_and_seed_dependent():
    model = tiny_dit()
    run = lambda seed: sample_latents(model, (1, 4, 2, 4, 4), _text(1), _text(1, seed=5), 3, 4.0,
                                      torch.Generator().manual_seed(seed))
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_callback_sees_every_step_and_can_cancel():
    model = tiny_dit()
    seen = []
    sample_latents(model, (1, 4, 1, 4, 4), _text(1), None, 4, 1.0, torch.Generator().manual_seed(0),
                   callback=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(GenerationCancelled, match="step 2 of 4"):
        sample_latents(model, (1, 4, 1, 4, 4), _text(1), None, 4, 1.0, torch.Generator().manual_seed(0),
                       callback=lambda step, total: step < 2)


def test_unknown_scheduler_is_named():
    with pytest.raises(ValueError, match="unipc"):
        sample_latents(tiny_dit(), (1, 4, 1, 4, 4), _text(1), None, 2, 1.0, torch.Generator(), scheduler="ddim")


def test_loss_of_a_zero_model_is_the_velocity_energy():
    class Zero(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x, t, ctx, mask):
            return torch.zeros_like(x)

    x0 = torch.randn(2, 4, 2, 4, 4)
    loss = flow_matching_loss(Zero(), x0, *_text(2), generator=torch.Generator().manual_seed(0), reduction="none")
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    expected = (noise - x0).square().flatten(1).mean(1)
    torch.testing.assert_close(loss, expected)


def test_loss_trains_the_dit_and_is_reproducible():
    torch.manual_seed(0)
    model = tiny_dit().train()
    x0 = torch.randn(2, 4, 2, 4, 4)
    text = _text(2)
    a = flow_matching_loss(model, x0, *text, generator=torch.Generator().manual_seed(1))
    b = flow_matching_loss(model, x0, *text, generator=torch.Generator().manual_seed(1))
    assert a.ndim == 0 and torch.equal(a, b)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = None
    for step in range(15):  # overfit one batch at fixed noise: the loss must fall
        loss = flow_matching_loss(model, x0, *text, generator=torch.Generator().manual_seed(1))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_training_sigmas_and_shift():
    s = sample_training_sigmas(4096, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() < 1 and abs(s.mean() - 0.5) < 0.02
    shifted = sample_training_sigmas(4096, torch.Generator().manual_seed(0), shift=3.0)
    assert shifted.mean() > s.mean() + 0.1  # more time at high noise
    torch.testing.assert_close(shift_sigmas(torch.tensor([0.0, 0.5, 1.0]), 3.0), torch.tensor([0.0, 0.75, 1.0]))
    u = sample_training_sigmas(4096, torch.Generator().manual_seed(0), timestep_sampling="uniform")
    assert abs(u.mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="logit_normal"):
        sample_training_sigmas(2, timestep_sampling="cosine")
    with pytest.raises(ValueError, match="reduction"):
        flow_matching_loss(tiny_dit(), torch.randn(1, 4, 1, 2, 2), *_text(1), reduction="sum")
