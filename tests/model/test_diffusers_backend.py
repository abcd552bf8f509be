"""Other backends: tiny random diffusers WanPipeline / CogVideoXPipeline folders served through load_pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from diffusers_fixtures import save_tiny_cogvideox_pipeline, save_tiny_wan_pipeline

from model.diffusers_backend import DiffusersVideoPipeline
from model.pipeline import GenerationCancelled, TextToVideoPipeline, load_pipeline

SMALL = dict(num_frames=9, height=32, width=48, num_inference_steps=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers")
    return {"wan": save_tiny_wan_pipeline(root / "wan"), "cogvideox": save_tiny_cogvideox_pipeline(root / "cog")}


@pytest.fixture(scope="module")
def adapters(folders):
    return {name: load_pipeline(folder, backend="auto" if name != "wan" else "diffusers")
            for name, folder in folders.items()}


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_adapter_generates_seeded_uint8_frames(adapters, name):
    pipe = adapters[name]
    assert isinstance(pipe, DiffusersVideoPipeline) and not pipe.is_random_weights
    seen = []
    frames = pipe("a red ball", seed=5, callback=lambda s, t: seen.append((s, t)), **SMALL)
    assert frames.dtype == np.uint8 and frames.shape == (9, 32, 48, 3)
    assert seen == [(1, 2), (2, 2)]
    assert np.array_equal(frames, pipe("a red ball", seed=5, **SMALL))
    assert not np.array_equal(frames, pipe("a red ball", seed=6, **SMALL))


@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_adapter_cancels_and_validates(adapters, name):
    pipe = adapters[name]
    with pytest.raises(GenerationCancelled):
        pipe("a red ball", seed=5, callback=lambda s, t: False, **SMALL)
    with pytest.raises(ValueError, match="num_frames must be 4k"):
        pipe("a red ball", **{**SMALL, "num_frames": 8})
    with pytest.raises(ValueError, match="height must be a positive multiple of 16"):
        pipe("a red ball", **{**SMALL, "height": 40})
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        pipe("", **SMALL)
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe("a red ball", guidance_scale=0.0, **SMALL)
    with pytest.raises(ValueError, match="mode 'fast' is not available for a diffusers-backed model"):
        pipe("a red ball", mode="fast", **SMALL)


def test_adapter_defaults_and_hash(adapters, folders):
    wan, cog = adapters["wan"], adapters["cogvideox"]
    assert (wan.num_inference_steps, wan.guidance_scale, wan.fps) == (50, 5.0, 16)
    assert (cog.guidance_scale, cog.fps) == (6.0, 8)
    assert len(wan.weights_hash) == 64 and wan.weights_hash != cog.weights_hash


def test_wan_folder_runs_natively_and_matches_diffusers(adapters, folders):
    native = load_pipeline(folders["wan"])  # auto: converted onto VideoDiT
    assert isinstance(native, TextToVideoPipeline)
    for guidance in (1.0, 4.0):
        ours = native("a red ball", negative_prompt="blurry", guidance_scale=guidance, seed=3, **SMALL)
        theirs = adapters["wan"]("a red ball", negative_prompt="blurry", guidance_scale=guidance, seed=3, **SMALL)
        assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_foreign_pipeline_is_refused_on_the_native_backend(folders):
    with pytest.raises(ValueError, match="cannot run on the native backend"):
        load_pipeline(folders["cogvideox"], backend="native")
