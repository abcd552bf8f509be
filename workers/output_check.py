"""Output check: a frame classifier that can block a finished video before it is stored.

Off by default. One switch turns it on: `SPACETIME_OUTPUT_CHECK_MODEL=/path/to/folder`, a local
transformers image-classification folder (`config.json` with `id2label`, weights, and a
preprocessor config). A few evenly spaced frames are classified; the video is blocked when any
"block" label reaches the threshold on any sampled frame.

Which labels block, the threshold and the number of frames come from `spacetime_output_check.json`
in the same folder, for example `{"block_labels": ["nsfw"], "threshold": 0.8, "num_frames": 4}`.
Without that file, labels with the usual unsafe names (nsfw, porn, gore, ...) block at 0.5.
Nothing is downloaded: the folder is loaded with `local_files_only=True`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODEL_ENV = "SPACETIME_OUTPUT_CHECK_MODEL"
CONFIG_FILE = "spacetime_output_check.json"
ERROR_CODE = "output_blocked"
# Label names that block when the folder has no spacetime_output_check.json.
DEFAULT_BLOCK_LABELS = frozenset({"nsfw", "porn", "hentai", "sexy", "explicit", "unsafe", "gore", "violence",
                                  "violent", "blood", "nudity", "nude"})


class OutputCheckError(ValueError):
    """The output-check folder or its configuration is unusable (the message says why)."""


class OutputBlocked(Exception):
    """A finished video was withheld; the job fails with `code` and this message."""

    code = ERROR_CODE

    def __init__(self, verdict: "OutputVerdict") -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass(frozen=True)
class OutputVerdict:
    allowed: bool
    label: str | None = None  # the block label that fired, or the most likely block label
    score: float = 0.0  # its probability
    frame_index: int | None = None  # the frame it fired on
    frames_checked: tuple[int, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)  # max probability per label over frames

    @property
    def reason(self) -> str:
        if self.allowed:
            return "allowed"
        return (f"The generated video was blocked by the output check "
                f"({self.label}: {self.score:.2f} on frame {self.frame_index}).")


@dataclass(frozen=True)
class OutputCheckConfig:
    block_labels: frozenset[str]
    threshold: float = 0.5
    num_frames: int = 4

    @classmethod
    def load(cls, folder: Path, labels: list[str]) -> "OutputCheckConfig":
        path = folder / CONFIG_FILE
        raw: dict[str, Any] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise OutputCheckError(f"{path} is not valid JSON: {exc}") from None
            unknown = set(raw) - {"block_labels", "threshold", "num_frames"}
            if unknown:
                raise OutputCheckError(f"{path}: unknown keys {sorted(unknown)}")
        block = frozenset(raw.get("block_labels") or [l for l in labels if l.lower() in DEFAULT_BLOCK_LABELS])
        if not block:
            raise OutputCheckError(f"no label of {folder} ({labels}) blocks; list the ones that should in {path}")
        missing = block - set(labels)
        if missing:
            raise OutputCheckError(f"{path}: block_labels {sorted(missing)} are not labels of the model ({labels})")
        threshold, num_frames = float(raw.get("threshold", 0.5)), int(raw.get("num_frames", 4))
        if not 0.0 < threshold <= 1.0 or num_frames < 1:
            raise OutputCheckError(f"{path}: threshold must be in (0, 1] and num_frames >= 1")
        return cls(block, threshold, num_frames)


class OutputCheck:
    """A local image classifier plus the label mapping; loaded once per worker process."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        import torch  # heavy imports only when the check is switched on
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise OutputCheckError(f"{MODEL_ENV}={self.folder}: not a model folder (no config.json)")
        try:
            self.processor = AutoImageProcessor.from_pretrained(self.folder, local_files_only=True)
            self.model = AutoModelForImageClassification.from_pretrained(self.folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise OutputCheckError(f"cannot load the output-check model from {self.folder}: {exc}") from None
        self.model.eval().to(device)
        self.device = device
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.config = OutputCheckConfig.load(self.folder, self.labels)
        self._torch = torch

    def sample(self, num_frames_total: int) -> list[int]:
        count = min(self.config.num_frames, num_frames_total)
        return sorted({int(i) for i in np.linspace(0, num_frames_total - 1, count).round()})

    def check(self, frames: np.ndarray) -> OutputVerdict:
        """Classify sampled frames of uint8 (T, H, W, 3); blocked if a block label >= threshold."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        picks = self.sample(len(frames))
        inputs = self.processor(images=[frames[i] for i in picks], return_tensors="pt").to(self.device)
        with self._torch.no_grad():
            logits = self.model(**inputs).logits  # (F, num_labels)
        multi_label = self.model.config.problem_type == "multi_label_classification"
        probs = (logits.sigmoid() if multi_label else logits.softmax(-1)).float().cpu().numpy()
        scores = {label: float(probs[:, j].max()) for j, label in enumerate(self.labels)}
        best = (0.0, None, None)  # (score, label, frame) of the most likely block label
        for j, label in enumerate(self.labels):
            if label in self.config.block_labels:
                f = int(probs[:, j].argmax())
                best = max(best, (float(probs[f, j]), label, picks[f]), key=lambda b: b[0])
        score, label, frame = best
        return OutputVerdict(score < self.config.threshold, label, score, frame, tuple(picks), scores)

    def enforce(self, frames: np.ndarray) -> OutputVerdict:
        verdict = self.check(frames)
        if not verdict.allowed:
            raise OutputBlocked(verdict)
        return verdict


def validate_folder(folder: str | Path) -> OutputCheckConfig:
    """Check an output-check folder without loading the model (no torch): its config.json labels
    and the block mapping. `spacetime worker` calls this before Celery starts, because an error
    raised later, in Celery's process-init signal, is only logged and the worker would run on."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise OutputCheckError(f"{MODEL_ENV}={folder}: not a model folder (no config.json)")
    try:
        id2label = json.loads(config.read_text()).get("id2label") or {}
    except json.JSONDecodeError as exc:
        raise OutputCheckError(f"{config} is not valid JSON: {exc}") from None
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    return OutputCheckConfig.load(folder, labels)


_loaded: dict[tuple[str, str], OutputCheck] = {}


def get_output_check(folder: str | Path | None = None, device: str = "cpu") -> OutputCheck | None:
    """The check for `folder` (default: $SPACETIME_OUTPUT_CHECK_MODEL), loaded once; None when off."""
    folder = folder or os.environ.get(MODEL_ENV) or None
    if folder is None:
        return None
    key = (str(Path(folder).resolve()), device)
    if key not in _loaded:
        _loaded[key] = OutputCheck(folder, device)
    return _loaded[key]
