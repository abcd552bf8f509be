"""The shapes world: determinism, held-out split, captions, buckets, rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.buckets import ShapesWorldStream, all_buckets, batch_size_for
from model.data.captions import MAX_CAPTION_BYTES, canonical_caption, random_caption
from model.data.shapes import (
    COLOURS, FRAME_COUNTS, MOTIONS, PALETTE, SHAPES, SIZES, ObjectSpec, Scene, is_held_out,
    place_scene, render_clip, sample_scene,
)


def test_render_is_deterministic_in_seed():
    scene = Scene((ObjectSpec("circle", "red", "left"), ObjectSpec("square", "blue", "up")))
    a, _ = render_clip(scene, seed=3, height=96, width=160, num_frames=9)
    b, _ = render_clip(scene, seed=3, height=96, width=160, num_frames=9)
    c, _ = render_clip(scene, seed=4, height=96, width=160, num_frames=9)
    assert a.shape == (9, 96, 160, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_object_colour_and_motion_show_in_pixels():
    scene = Scene((ObjectSpec("square", "yellow", "right"),))
    frames, place = render_clip(scene, seed=0, height=128, width=128, num_frames=17)
    target = np.array(PALETTE["yellow"]) * 255
    near = np.abs(frames.astype(float) - target).max(-1) < 20          # (T, H, W)
    xs = [np.nonzero(near[t])[1].mean() for t in (0, 16)]
    assert near[0].sum() > 100 and xs[1] > xs[0] + 20                    # moved right
    yy, xx = np.mgrid[0:128, 0:128] + 0.5
    far = np.hypot(xx - place.centres[0, 0, 0], yy - place.centres[0, 0, 1]) > 1.4 * place.radii[0]
    assert frames[0][far].max() <= 0.25 * 255 + 1                        # dark background
    assert np.allclose(place.centres[0, :, 1], place.centres[0, 0, 1])   # no vertical drift


def test_edges_are_anti_aliased():
    frames, _ = render_clip(Scene((ObjectSpec("circle", "white", "still"),)), 1, 128, 128, 9)
    levels = np.unique(frames[0, :, :, 0])
    assert len(levels) > 20  # intermediate edge values, not a binary mask


@pytest.mark.parametrize("height,width,frames", [(128, 128, 33), (160, 96, 33), (96, 160, 9)])
def test_objects_stay_inside_and_apart(height, width, frames):
    rng = np.random.default_rng(0)
    for _ in range(100):
        scene = sample_scene(rng, "train", num_objects=2)
        place = place_scene(scene, rng, height, width, frames)
        x, y = place.centres[..., 0], place.centres[..., 1]
        r = place.radii[:, None]
        assert (x - r >= 0).all() and (x + r <= width).all()
        assert (y - r >= 0).all() and (y + r <= height).all()
        gap = np.linalg.norm(place.centres[0] - place.centres[1], axis=-1).min()
        assert gap > place.radii.sum()
        assert scene.objects[0].colour != scene.objects[1].colour



def test_two_objects_read_left_to_right_in_the_order_named():
    """The first-named object is drawn left of the second (the layout rule that lets the tiny
    model bind each phrase to its own object), over every bucket and both splits."""
    rng = np.random.default_rng(3)
    for i in range(600):
        height, width = SIZES[i % len(SIZES)]
        frames = FRAME_COUNTS[(i // len(SIZES)) % len(FRAME_COUNTS)]
        scene = sample_scene(rng, "heldout" if i % 5 == 0 else "train", num_objects=2)
        place = place_scene(scene, rng, height, width, frames)
        mean_x = place.centres[..., 0].mean(axis=1)
        assert mean_x[1] - mean_x[0] >= place.radii.mean()
    # The hardest paths (both objects crossing a square frame horizontally) still place.
    scene = Scene((ObjectSpec("square", "red", "left"), ObjectSpec("square", "blue", "right")))
    for seed in range(100):
        place = place_scene(scene, np.random.default_rng(seed), 128, 128, 33)
        gap = np.linalg.norm(place.centres[0] - place.centres[1], axis=-1).min()
        assert gap > place.radii.sum()

def test_held_out_combinations_never_trained():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        scene = sample_scene(rng, "train")
        assert not any(is_held_out(o) for o in scene.objects)
    held = [sample_scene(rng, "heldout", 1).objects[0] for _ in range(200)]
    assert all(is_held_out(o) for o in held)
    assert {o.shape for o in held if o.colour == "purple"} == {"triangle"}
    # Every attribute value still appears in training on its own.
    seen = [sample_scene(rng, "train", 1).objects[0] for _ in range(2000)]
    assert {o.colour for o in seen} == set(COLOURS)
    assert {o.shape for o in seen} == set(SHAPES) and {o.motion for o in seen} == set(MOTIONS)
    with pytest.raises(ValueError, match="split"):
        sample_scene(rng, "test")


def test_captions_vary_and_fit_the_tokenizer():
    rng = np.random.default_rng(2)
    scene = Scene((ObjectSpec("circle", "red", "left"),))
    captions = {random_caption(scene, rng) for _ in range(200)}
    assert len(captions) > 30
    assert canonical_caption(scene) == "a red circle moving left"
    assert any("crimson" in c or "scarlet" in c for c in captions)
    for _ in range(500):
        s = sample_scene(rng, "train")
        assert len(random_caption(s, rng).encode()) <= MAX_CAPTION_BYTES
        assert len(canonical_caption(s).encode()) <= MAX_CAPTION_BYTES
    pair = Scene((ObjectSpec("triangle", "orange", "still"), ObjectSpec("square", "blue", "up")))
    assert canonical_caption(pair) == "an orange triangle staying still and a blue square moving up"


def test_each_motion_phrase_has_one_key_word_found_nowhere_else():
    """`binding_targets` finds an object's motion by its key word, so each phrase must hold exactly
    one, of its own motion, and no other caption word may be one."""
    from model.data.captions import (
        _PAIR_TEMPLATES, _SINGLE_TEMPLATES, COLOUR_WORDS, MOTION_KEY_WORDS, MOTION_PHRASES, SHAPE_WORDS, STYLE_WORDS,
    )

    keys = {w: m for m, ws in MOTION_KEY_WORDS.items() for w in ws}
    assert sum(len(ws) for ws in MOTION_KEY_WORDS.values()) == len(keys)  # no word names two motions
    assert MOTION_KEY_WORDS["left"] == {"left", "leftward"} and "not" in MOTION_KEY_WORDS["still"]
    for motion, phrases in MOTION_PHRASES.items():
        for phrase in phrases:
            assert [keys[w] for w in phrase.split() if w in keys] == [motion], phrase
    other = {w for ws in (*COLOUR_WORDS.values(), *SHAPE_WORDS.values()) for w in ws}
    other |= {w.strip(",") for t in _SINGLE_TEMPLATES + _PAIR_TEMPLATES for w in t.split() if "{" not in w}
    other |= {w for style in STYLE_WORDS for w in style.split()} | {"a", "an"}
    assert not other & set(keys)


def test_stream_batches_share_a_bucket_and_scale_batch_size():
    buckets = all_buckets()
    assert len(buckets) == 12 and {b.num_frames for b in buckets} == {9, 17, 25, 33}
    stream = ShapesWorldStream(voxels_per_batch=4 * 9 * 128 * 128, seed=0)
    sizes = set()
    for _ in range(6):
        batch = stream.next_batch()
        b, c, t, h, w = batch.video.shape
        sizes.add((t, h, w))
        assert c == 3 and (t - 1) % 4 == 0 and (h, w) in {(128, 128), (96, 160), (160, 96)}
        assert b == batch_size_for(next(x for x in buckets if (x.num_frames, x.height, x.width) == (t, h, w)),
                                   stream.voxels_per_batch)
        assert len(batch.captions) == b and batch.video.min() >= -1 and batch.video.max() <= 1
    assert len(sizes) > 1
    again = ShapesWorldStream(voxels_per_batch=4 * 9 * 128 * 128, seed=0).next_batch()
    first = ShapesWorldStream(voxels_per_batch=4 * 9 * 128 * 128, seed=0).next_batch()
    assert torch.equal(again.video, first.video) and again.captions == first.captions


def test_pair_share_sets_the_two_object_rate_and_defaults_to_the_old_stream():
    rng = np.random.default_rng(5)
    pairs = sum(len(sample_scene(rng, "train", pair_share=0.8).objects) == 2 for _ in range(2000))
    assert 1500 < pairs < 1700  # 80 % of 2,000, within ~4 standard deviations
    assert all(len(sample_scene(rng, "train", pair_share=0.0).objects) == 1 for _ in range(100))
    # The default equals the stream the shipped weights were trained on (one draw, < 0.5 -> one object).
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    assert [sample_scene(a, "train") for _ in range(50)] == [sample_scene(b, "train", pair_share=0.5) for _ in range(50)]


def test_caption_noise_pads_captions_with_style_words_that_still_fit():
    from model.data.captions import STYLE_WORDS
    from model.text_encoder import word_tokenizer

    rng = np.random.default_rng(4)
    tok = word_tokenizer()
    scene = Scene((ObjectSpec("circle", "red", "left"),))
    noisy = [random_caption(scene, rng, noise=1.0) for _ in range(300)]
    padded = [c for c in noisy if any(w in c for w in STYLE_WORDS)]
    assert len(padded) > 200  # the rest did not fit 63 bytes with their style words
    assert all(len(c.encode()) <= MAX_CAPTION_BYTES for c in noisy)
    assert sum(tok.unk_token_id in tok(c)["input_ids"] for c in padded) > 100  # training sees <unk>
    assert any(c.startswith(tuple(STYLE_WORDS)) for c in padded) and any(c.endswith(tuple(STYLE_WORDS)) for c in padded)
    # noise 0 draws nothing extra: the same captions as before the option existed
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    assert [random_caption(scene, a) for _ in range(50)] == [random_caption(scene, b, noise=0.0) for _ in range(50)]
