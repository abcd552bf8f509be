"""TextToVideoPipeline: frames out, determinism, save/load, guidance, cancellation, every bad argument."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_PRESET

from model.pipeline import GenerationCancelled, TextToVideoPipeline, load_pipeline
from model.presets import PRESETS

SMALL = dict(num_frames=5, height=32, width=48, num_inference_steps=2)


def test_frames_have_the_requested_shape(tiny_pipeline):
    for kwargs in (SMALL, dict(num_frames=1, height=16, width=16, num_inference_steps=1),
                   dict(num_frames=9, height=48, width=32, num_inference_steps=1)):
        frames = tiny_pipeline("a red circle", seed=0, **kwargs)
        assert frames.dtype == np.uint8
        assert frames.shape == (kwargs["num_frames"], kwargs["height"], kwargs["width"], 3)
    assert tiny_pipeline("a red circle", seed=0).shape == (5, 32, 48, 3)  # the preset's defaults


def test_seed_gives_bit_identical_frames_and_prompts_matter(tiny_pipeline):
    a = tiny_pipeline("a red circle moving left", seed=11, **SMALL)
    assert np.array_equal(a, tiny_pipeline("a red circle moving left", seed=11, **SMALL))
    assert not np.array_equal(a, tiny_pipeline("a red circle moving left", seed=12, **SMALL))
    assert not np.array_equal(a, tiny_pipeline("a blue square moving up", seed=11, **SMALL))
    assert not np.array_equal(a, tiny_pipeline("a red circle moving left", negative_prompt="blur", seed=11, **SMALL))
    assert not np.array_equal(a, tiny_pipeline("a red circle moving left", guidance_scale=1.0, seed=11, **SMALL))


def test_save_load_round_trip_is_bit_identical(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    for sub in ("transformer", "vae", "text_encoder", "tokenizer"):
        assert (tmp_path / "pipe" / sub).is_dir()
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoPipeline" and index["defaults"]["num_inference_steps"] == 3
    loaded = load_pipeline(tmp_path / "pipe")
    assert not loaded.is_random_weights
    assert np.array_equal(tiny_pipeline("a green triangle", seed=3, **SMALL), loaded("a green triangle", seed=3, **SMALL))
    assert loaded.weights_hash == load_pipeline(tmp_path / "pipe").weights_hash
    assert len(loaded.weights_hash) == 64


def test_callback_progress_and_cancellation(tiny_pipeline):
    seen = []
    tiny_pipeline("a red circle", seed=0, callback=lambda s, t: seen.append((s, t)), **SMALL)
    assert seen == [(1, 2), (2, 2)]
    with pytest.raises(GenerationCancelled):
        tiny_pipeline("a red circle", seed=0, callback=lambda s, t: False, **SMALL)


def test_tiny_preset_without_weights_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(PRESETS["spacetime-tiny"], "weights_dir", tmp_path / "absent")
    with pytest.warns(UserWarning, match="random weights: output will not follow the prompt"):
        pipe = load_pipeline("spacetime-tiny")
    assert pipe.is_random_weights
    assert (pipe.num_inference_steps, pipe.guidance_scale) == (20, 3.0)
    frames = pipe("a red circle", num_frames=5, height=32, width=32, num_inference_steps=1, seed=0)
    assert frames.shape == (5, 32, 32, 3)


def test_tiny_defaults_agree_in_the_preset_the_weights_folder_and_the_gateway_catalogue():
    """The gateway fills in steps and guidance from its catalogue; the worker's pipeline from its folder."""
    import json

    from service.catalog import BUILTIN_MODELS

    preset = PRESETS["spacetime-tiny"]
    folder = json.loads((preset.weights_dir / "model_index.json").read_text())["defaults"]
    served = BUILTIN_MODELS["spacetime-tiny"]
    d = preset.defaults
    assert (folder["num_inference_steps"], folder["guidance_scale"], folder["fps"]) == \
        (d.num_inference_steps, d.guidance_scale, d.fps) == (served.default_steps, served.default_guidance, served.fps)


def test_tiny_preset_fits_the_size_budget(tmp_path):
    pipe = TextToVideoPipeline.from_preset("spacetime-tiny")
    pipe.save_pretrained(tmp_path / "tiny", dtype=torch.float16)
    total = sum(p.stat().st_size for p in (tmp_path / "tiny").rglob("*.safetensors"))
    assert total <= 30e6, f"{total / 1e6:.1f} MB"
    dit_params = sum(p.numel() for p in pipe.transformer.parameters())
    assert 5e6 <= dit_params <= 10e6


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt=""), "prompt must be a non-empty string"),
    (dict(prompt="   "), "prompt must be a non-empty string"),
    (dict(prompt=None), "prompt must be a non-empty string"),
    (dict(negative_prompt=None), "negative_prompt must be a string"),
    (dict(num_frames=16), r"num_frames must be 4k\+1 \(1, 5, 9, 13, 17"),
    (dict(num_frames=0), "num_frames must be 4k"),
    (dict(num_frames=True), "num_frames must be 4k"),
    (dict(num_frames=5.0), "num_frames must be 4k"),
    (dict(height=100), "height must be a positive multiple of 16"),
    (dict(height=0), "height must be a positive multiple of 16"),
    (dict(width=24), "width must be a positive multiple of 16"),
    (dict(width="32"), "width must be a positive multiple of 16"),
    (dict(fps=0), "fps must be an integer from 1 to 120"),
    (dict(fps=121), "fps must be an integer from 1 to 120"),
    (dict(num_inference_steps=0), "num_inference_steps must be a positive integer"),
    (dict(num_inference_steps=2.5), "num_inference_steps must be a positive integer"),
    (dict(guidance_scale=0.5), "guidance_scale must be a finite number >= 1"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number >= 1"),
    (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number >= 1"),
    (dict(seed=-1), "seed must be None or an integer from 0"),
    (dict(seed=2**63), "seed must be None or an integer from 0"),
    (dict(seed="7"), "seed must be None or an integer from 0"),
    (dict(callback="print"), "callback must be callable"),
])
def test_bad_arguments_are_refused_with_the_allowed_values(tiny_pipeline, kwargs, message):
    call = dict(prompt="a red circle", **SMALL) | kwargs
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**call)


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'nope'.*spacetime-tiny"):
        load_pipeline("nope")
    with pytest.raises(ValueError, match="weights are not shipped"):
        load_pipeline("wan2.1-1.3b")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_pipeline(tmp_path)
    with pytest.raises(ValueError, match="backend must be"):
        load_pipeline("spacetime-tiny", backend="onnx")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoPipeline"}))
    with pytest.raises(ValueError, match="native spacetime folder"):
        load_pipeline(tmp_path, backend="diffusers")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="cannot run on the native backend"):
        load_pipeline(tmp_path, backend="native")


def test_preset_shapes_are_consistent():
    for preset in PRESETS.values():
        assert preset.dit.text_dim == preset.text.d_model
        assert preset.dit.in_channels == preset.vae.z_dim
    assert TINY_PRESET.dit.in_channels == TINY_PRESET.vae.z_dim


def test_random_build_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = TextToVideoPipeline.from_preset(TINY_PRESET)
    assert torch.equal(torch.rand(3), expected)
    b = TextToVideoPipeline.from_preset(TINY_PRESET)
    assert a.weights_hash == b.weights_hash


def test_preset_loads_its_shipped_weights_when_present(monkeypatch, tmp_path, tiny_pipeline):
    tiny_pipeline.save_pretrained(tmp_path / "weights", dtype=torch.float16)
    monkeypatch.setattr(PRESETS["spacetime-tiny"], "weights_dir", tmp_path / "weights")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-weights warning
        pipe = load_pipeline("spacetime-tiny")
    assert not pipe.is_random_weights and pipe.folder == tmp_path / "weights"
    assert pipe.transformer.config == tiny_pipeline.transformer.config
    assert pipe.transformer.x_embedder.weight.dtype == torch.float32  # fp16 on disk, fp32 on the CPU
