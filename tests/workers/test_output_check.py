"""Output check with a tiny random ViT classifier whose decision is forced through its bias."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from workers import output_check
from workers.output_check import OutputBlocked, OutputCheck, OutputCheckError, get_output_check

LABELS = {0: "safe", 1: "nsfw"}


def make_classifier(folder: Path, bias: tuple[float, float], mapping: dict | None = None) -> Path:
    """A 1-layer ViT on 32x32 inputs. The classifier weight is zeroed, so its output is the bias
    whatever the frame: softmax(bias) is the score the check sees."""
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=16, num_channels=3, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=37, id2label=LABELS,
                       label2id={v: k for k, v in LABELS.items()})
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    if mapping is not None:
        (folder / output_check.CONFIG_FILE).write_text(json.dumps(mapping))
    return folder


def video(num_frames: int = 9) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (num_frames, 48, 64, 3), dtype=np.uint8)


def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(output_check.MODEL_ENV, raising=False)
    assert get_output_check() is None


def test_blocks_when_the_block_label_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_classifier(tmp_path / "block", bias=(-4.0, 4.0))  # nsfw ~ 0.9997
    monkeypatch.setenv(output_check.MODEL_ENV, str(folder))
    check = get_output_check()
    assert check is not None and get_output_check() is check  # loaded once per process
    verdict = check.check(video())
    assert not verdict.allowed and verdict.label == "nsfw" and verdict.score > 0.99
    assert verdict.frames_checked == (0, 3, 5, 8)  # 4 evenly spaced frames of 9
    with pytest.raises(OutputBlocked) as info:
        check.enforce(video())
    assert info.value.code == "output_blocked" and "nsfw" in str(info.value)


def test_allows_when_the_safe_label_wins(tmp_path: Path) -> None:
    check = OutputCheck(make_classifier(tmp_path / "allow", bias=(4.0, -4.0)))
    verdict = check.enforce(video())
    assert verdict.allowed and verdict.label == "nsfw" and verdict.score < 0.01
    assert set(verdict.scores) == {"safe", "nsfw"}


def test_threshold_and_frame_count_come_from_the_folder(tmp_path: Path) -> None:
    # bias (0, 0.4): nsfw = sigmoid(0.4) ~ 0.599 on every frame
    strict = OutputCheck(make_classifier(tmp_path / "strict", (0.0, 0.4), {"block_labels": ["nsfw"], "threshold": 0.55}))
    lenient = OutputCheck(make_classifier(tmp_path / "lenient", (0.0, 0.4),
                                          {"block_labels": ["nsfw"], "threshold": 0.65, "num_frames": 2}))
    assert not strict.check(video()).allowed
    verdict = lenient.check(video())
    assert verdict.allowed and verdict.frames_checked == (0, 8) and verdict.score == pytest.approx(0.599, abs=1e-3)
    # mapping the other label to block flips the decision
    flipped = OutputCheck(make_classifier(tmp_path / "flipped", (4.0, -4.0), {"block_labels": ["safe"]}))
    assert not flipped.check(video()).allowed


@pytest.mark.parametrize("mapping, message", [
    ({"block_labels": ["gore"]}, "not labels of the model"),
    ({"block_labels": ["nsfw"], "threshold": 0}, "threshold"),
    ({"block_label": ["nsfw"]}, "unknown keys"),
])
def test_bad_mapping_fails_clearly(tmp_path: Path, mapping: dict, message: str) -> None:
    with pytest.raises(OutputCheckError, match=message):
        OutputCheck(make_classifier(tmp_path / "bad", (0.0, 0.0), mapping))


def test_model_without_a_known_block_label_needs_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output_check, "DEFAULT_BLOCK_LABELS", frozenset({"gore"}))
    with pytest.raises(OutputCheckError, match="spacetime_output_check.json"):
        OutputCheck(make_classifier(tmp_path / "unmapped", (0.0, 0.0)))


def test_missing_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(OutputCheckError, match="no config.json"):
        OutputCheck(tmp_path / "nothing-here")


def test_rejects_frames_of_the_wrong_shape(tmp_path: Path) -> None:
    check = OutputCheck(make_classifier(tmp_path / "shape", (0.0, 0.0)))
    with pytest.raises(ValueError, match="uint8"):
        check.check(video().astype(np.float32))


def test_validate_folder_reads_labels_and_mapping_without_loading_the_model(tmp_path: Path) -> None:
    folder = make_classifier(tmp_path / "clf", bias=(0.0, 0.0))
    config = output_check.validate_folder(folder)
    assert config.block_labels == frozenset({"nsfw"})
    with pytest.raises(OutputCheckError, match="no config.json"):
        output_check.validate_folder(tmp_path / "missing")
    (folder / output_check.CONFIG_FILE).write_text(json.dumps({"block_labels": ["violence"]}))
    with pytest.raises(OutputCheckError, match="not labels of the model"):
        output_check.validate_folder(folder)


def test_spacetime_worker_refuses_a_broken_output_check_folder_before_taking_jobs(tmp_path: Path) -> None:
    # Celery only logs errors raised in its process-init signal, so the check runs before Celery starts.
    import os
    import subprocess
    import sys

    env = {**os.environ, output_check.MODEL_ENV: str(tmp_path / "missing"), "SPACETIME_EMBEDDED": "1",
           "SPACETIME_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", "workers.cli", "worker", "--models", "spacetime-tiny"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no config.json" in done.stderr
