"""bench/text_probe.py: the linear probes read what is there and nothing that is not."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.text_probe import linear_probe, probe  # noqa: E402
from model.presets import get_preset  # noqa: E402
from model.text_encoder import build_text_encoder  # noqa: E402


def test_linear_probe_separates_what_is_separable_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    assert linear_probe(x, (x[:, 0] > 0).long(), 2) > 0.95
    assert linear_probe(x, torch.randint(0, 2, (400,), generator=g), 2) < 0.65


def test_probe_finds_word_order_only_when_the_encoder_has_it():
    text = build_text_encoder(get_preset("spacetime-tiny").text, seed=0).eval()
    scores = probe(text, num_captions=300, canonical=True)
    assert set(scores) == {"own colour", "own motion", "phrase index"}
    assert scores["own colour"][1] < 0.35  # a shape word's embedding carries no colour
    assert scores["phrase index"][1] < 0.65  # nor its phrase
    text.enable_abs_pos()
    with torch.no_grad():
        torch.nn.init.normal_(text.pos_embedding, std=1.0)  # a strong position signal
    assert probe(text, num_captions=300, canonical=True)["phrase index"][0] > 0.9
