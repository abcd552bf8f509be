"""A batch of prompts in one pipeline call: each clip equals the clip its seed gives alone."""

from __future__ import annotations

import numpy as np
import pytest

SMALL = dict(num_frames=5, height=32, width=48, num_inference_steps=3)


def test_batched_clips_equal_the_clips_generated_alone(tiny_pipeline):
    prompts, negatives, seeds = ["a red circle moving left", "a blue square", "a red circle moving left"], \
        ["", "blur", ""], [11, 12, 13]
    batch = tiny_pipeline(prompts, negative_prompt=negatives, seed=seeds, **SMALL)
    assert batch.shape == (3, 5, 32, 48, 3) and batch.dtype == np.uint8
    for clip, prompt, negative, seed in zip(batch, prompts, negatives, seeds):
        alone = tiny_pipeline(prompt, negative_prompt=negative, seed=seed, **SMALL)
        # Batched matmuls may round differently in the last float bit; uint8 frames then differ by
        # at most one level at a rounding boundary.
        diff = np.abs(clip.astype(int) - alone.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert not np.array_equal(batch[0], batch[2])  # same prompt, own seed: own noise


def test_a_batch_without_guidance_and_one_negative_prompt_for_all(tiny_pipeline):
    batch = tiny_pipeline(["a", "b"], negative_prompt="blur", seed=[1, 2], guidance_scale=1.0, **SMALL)
    alone = tiny_pipeline("b", negative_prompt="blur", seed=2, guidance_scale=1.0, **SMALL)
    assert np.abs(batch[1].astype(int) - alone.astype(int)).max() <= 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt=[]), "non-empty list"),
    (dict(prompt=["a", "b"], seed=3), "list of seeds"),
    (dict(prompt=["a", "b"], seed=[1]), "2 prompts need as many"),
    (dict(prompt=["a", "b"], negative_prompt=["x"], seed=[1, 2]), "2 prompts need as many"),
    (dict(prompt=["a", ""], seed=[1, 2]), "prompt must be a non-empty string"),
])
def test_bad_batches_are_refused(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**kwargs, **SMALL)
