"""Remix (SDEdit on the flow): a source clip encoded, noised to `strength` of the schedule, and the
rest of the schedule run with a new prompt (model.sampling.remix_start, TextToVideoPipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.detector import detect_objects
from model.pipeline import GenerationCancelled, load_pipeline
from model.sampling import remix_start, sample_latents

SMALL = dict(num_frames=5, height=32, width=48, num_inference_steps=4)


@pytest.mark.parametrize("steps, strength, start", [(20, 1.0, 0), (20, 0.6, 8), (20, 0.5, 10), (4, 0.3, 3),
                                                    (20, 0.01, 19), (1, 0.5, 0)])
def test_remix_start_runs_the_last_share_of_the_steps_and_at_least_one(steps, strength, start):
    assert remix_start(steps, strength) == start


@pytest.mark.parametrize("strength", [0.0, -0.5, 1.01, float("nan")])
def test_remix_start_refuses_a_strength_outside_0_1(strength):
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        remix_start(20, strength)


class StillFlow(torch.nn.Module):
    """Velocity 0 everywhere: the flow leaves every state where it is, so a sampler returns the
    state it starts from and the test sees where a remix starts."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, timestep, states, mask):
        return torch.zeros_like(x)


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_a_remix_starts_from_the_source_noised_to_its_strength(scheduler):
    shape = (1, 4, 2, 4, 6)
    init = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    cond = (torch.zeros(1, 3, 8), None)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    for strength, steps_run in ((0.5, 5), (0.3, 3), (1.0, 10)):
        solver_sigmas = _sigmas(scheduler)
        start = remix_start(10, strength)
        stats: dict = {}
        out = sample_latents(StillFlow(), shape, cond, None, 10, 1.0, torch.Generator().manual_seed(9),
                             scheduler=scheduler, shift=3.0, stats=stats, init_latents=init, strength=strength)
        sigma = solver_sigmas[start] if start else 1.0  # strength 1: pure noise, the source unused
        torch.testing.assert_close(out, (1 - sigma) * init + sigma * noise, rtol=1e-5, atol=1e-5)
        assert stats["steps"] == steps_run
    with pytest.raises(ValueError, match="do not match the latent shape"):
        sample_latents(StillFlow(), shape, cond, None, 10, 1.0, torch.Generator().manual_seed(9),
                       init_latents=init[:, :2], strength=0.5)


def _sigmas(scheduler: str) -> list[float]:
    from model.sampling import _make_scheduler

    solver = _make_scheduler(scheduler, 3.0)
    solver.set_timesteps(10)
    return solver.sigmas.tolist()


def test_strength_1_is_a_fresh_generation_and_a_remix_is_fixed_by_source_seed_and_strength(tiny_pipeline):
    source = tiny_pipeline("a red circle moving left", seed=1, **SMALL)
    fresh = tiny_pipeline("a blue square moving up", seed=2, **SMALL)
    assert np.array_equal(tiny_pipeline("a blue square moving up", seed=2, init_video=source, strength=1.0, **SMALL), fresh)
    remix = tiny_pipeline("a blue square moving up", seed=2, init_video=source, strength=0.5, **SMALL)
    assert not np.array_equal(remix, fresh)
    assert np.array_equal(remix, tiny_pipeline("a blue square moving up", seed=2, init_video=source, strength=0.5, **SMALL))
    assert not np.array_equal(remix, tiny_pipeline("a blue square moving up", seed=3, init_video=source, strength=0.5,
                                                   **SMALL))
    other_source = tiny_pipeline("a red circle moving left", seed=4, **SMALL)
    assert not np.array_equal(remix, tiny_pipeline("a blue square moving up", seed=2, init_video=other_source,
                                                   strength=0.5, **SMALL))


def test_a_remix_runs_and_reports_only_its_share_of_the_steps(tiny_pipeline):
    source = tiny_pipeline("a red circle", seed=1, **SMALL)
    seen: list[tuple[int, int]] = []
    tiny_pipeline("a red circle", seed=2, init_video=source, strength=0.5, callback=lambda s, t: seen.append((s, t)),
                  **SMALL)
    assert seen == [(1, 2), (2, 2)]
    assert tiny_pipeline.last_stats["steps"] == 2
    with pytest.raises(GenerationCancelled):
        tiny_pipeline("a red circle", seed=2, init_video=source, strength=0.5, callback=lambda s, t: False, **SMALL)
    fast = tiny_pipeline("a red circle", seed=2, init_video=source, strength=0.75, mode="fast", **SMALL)
    assert fast.shape == source.shape and tiny_pipeline.last_stats["steps"] == 3


@pytest.mark.parametrize("change, message", [
    (dict(init_video=np.zeros((5, 32, 32, 3), np.uint8)), r"init_video has shape \(5, 32, 32, 3\); this request needs \(5, 32, 48, 3\)"),
    (dict(init_video=np.zeros((9, 32, 48, 3), np.uint8)), "this request needs"),
    (dict(init_video=np.zeros((5, 32, 48, 3), np.float32)), "must be a uint8 numpy array"),
    (dict(init_video=[[0]]), "must be a uint8 numpy array"),
    (dict(strength=0.0), r"strength must be in \(0, 1\]"),
    (dict(strength=2.0), r"strength must be in \(0, 1\]"),
    (dict(prompt=["a", "b"], seed=[1, 2]), "takes one prompt, not a batch"),
])
def test_bad_remix_arguments_are_refused_before_any_work(tiny_pipeline, change, message):
    call = dict(prompt="a red circle", init_video=np.zeros((5, 32, 48, 3), np.uint8), strength=0.5, **SMALL) | change
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**call)


def test_the_trained_tiny_model_recolours_a_clip_and_keeps_where_the_object_is():
    """The shipped weights: a red circle moving left, remixed as a green one at the catalogue's
    default strength, is green, still a circle moving left, and where the source's was."""
    from service.catalog import DEFAULT_REMIX_STRENGTH

    pipe = load_pipeline("spacetime-tiny")
    source = pipe("a red circle moving left", seed=4)
    remix = pipe("a green circle moving left", seed=5, init_video=source, strength=DEFAULT_REMIX_STRENGTH)
    fresh = pipe("a green circle moving left", seed=5)
    (was,), (now,), (other,) = detect_objects(source)[:1], detect_objects(remix)[:1], detect_objects(fresh)[:1]
    assert (was.colour, was.shape, was.motion) == ("red", "circle", "left")
    assert (now.colour, now.shape, now.motion) == ("green", "circle", "left")
    assert abs(now.mean_x - was.mean_x) < 0.05, (now.mean_x, was.mean_x)
    assert abs(now.mean_x - was.mean_x) < abs(other.mean_x - was.mean_x)  # a fresh clip puts it elsewhere


def test_the_default_strength_is_one_value_in_the_model_the_gateway_and_the_cli():
    import argparse

    from model.sampling import REMIX_STRENGTH
    from service.catalog import DEFAULT_REMIX_STRENGTH, ServedModel
    from workers.generate import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    model = ServedModel(name="m", source="spacetime-tiny", sizes=["128x128"], seconds=["1"], fps=8, default_steps=2,
                        default_guidance=3.0)
    assert REMIX_STRENGTH == DEFAULT_REMIX_STRENGTH == model.remix_strength == parser.parse_args(["p"]).strength
