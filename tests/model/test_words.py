"""The word tokenizer of the tiny preset: a shipped vocabulary that covers every training caption."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from model.data.captions import canonical_caption, random_caption
from model.data.shapes import sample_scene
from model.presets import get_preset
from model.text_encoder import TextEncoder, build_text_encoder, word_tokenizer

TINY_TEXT = get_preset("spacetime-tiny").text


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def test_every_training_and_eval_caption_is_in_the_vocabulary(tokenizer):
    rng = np.random.default_rng(0)
    unk = tokenizer.unk_token_id
    longest = 0
    for i in range(3000):
        scene = sample_scene(rng, split="train" if i % 2 else "heldout")
        for caption in (random_caption(scene, rng), canonical_caption(scene)):
            ids = tokenizer(caption)["input_ids"]
            assert unk not in ids, f"unknown word in {caption!r}: {tokenizer.convert_ids_to_tokens(ids)}"
            longest = max(longest, len(ids))
    assert longest <= TINY_TEXT.max_length  # no training caption is ever truncated


def test_words_are_normalised_and_unknown_words_map_to_unk(tokenizer):
    a = tokenizer("A Crimson DISC, drifting leftward")["input_ids"]
    b = tokenizer("a crimson disc , drifting   leftward")["input_ids"]
    assert a == b
    assert tokenizer.convert_ids_to_tokens(a) == ["a", "crimson", "disc", ",", "drifting", "leftward", "</s>"]
    ids = tokenizer("a zebra moving left")["input_ids"]
    assert ids[1] == tokenizer.unk_token_id and ids[-1] == tokenizer.eos_token_id
    # synonyms are distinct ids: the encoder learns that they mean the same
    assert len({tokenizer.convert_tokens_to_ids(w) for w in ("red", "crimson", "scarlet", "blue")}) == 4
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)  # T5's ids


def test_tiny_preset_encodes_words_with_mask_and_truncation():
    enc = build_text_encoder(TINY_TEXT, seed=0)
    states, mask = enc.encode(["a red circle moving left", "", "red " * 100])
    assert states.shape == (3, TINY_TEXT.max_length, TINY_TEXT.d_model)
    assert mask[0].sum() == 6  # five words + </s>
    assert mask[1].sum() == 1  # the unconditional prompt is just </s>
    assert mask[2].all()
    ids, _ = enc.tokenize(["red " * 100])
    assert ids[0, -1] == 1  # truncation keeps the closing </s>
    assert (states[~mask] == 0).all()


def test_word_tokenizer_round_trips_with_the_encoder(tmp_path):
    enc = build_text_encoder(TINY_TEXT, seed=0)
    enc.save_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    loaded = TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    prompts = ["a lime tile sliding right, dark backdrop", "Purple Triangle rising"]
    assert torch.equal(loaded.tokenize(prompts)[0], enc.tokenize(prompts)[0])
    with torch.no_grad():
        assert torch.equal(loaded.encode(prompts)[0], enc.encode(prompts)[0])
    # A folder saved without tokenizer.json falls back to the shipped vocabulary.
    (tmp_path / "tokenizer" / "tokenizer.json").unlink()
    fallback = TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    assert torch.equal(fallback.tokenize(prompts)[0], enc.tokenize(prompts)[0])
    assert json.loads((tmp_path / "text_encoder" / "spacetime_text.json").read_text())["tokenizer"] == "words"


def test_vocabulary_larger_than_the_embedding_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        build_text_encoder(dataclasses.replace(TINY_TEXT, vocab_size=64))
