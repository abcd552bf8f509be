"""The served-model catalogue (torch-free): what each model accepts and where its weights live.

The gateway validates requests against it; a worker hands `source` to `load_pipeline`.
Operators add models with a JSON file (`SPACETIME_MODELS_FILE`): a list of objects with the
fields of `ServedModel`, e.g.

    [{"name": "wan2.1-1.3b", "source": "/models/wan2.1-1.3b", "sizes": ["832x480"],
      "seconds": ["2", "4"], "fps": 16, "default_steps": 50, "default_guidance": 5.0}]

`qualities` (default both) lists the `quality` values a request may ask for: a diffusers pipeline
folder served as it is has no fast mode, so give it `["exact"]`. The same folder cannot remix a
video either: give it `"remix": false`. `remix_strength` is the strength a remix gets when the
request names none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from service.schemas import Quality

# The hard time limit follows the soft one by this much: the soft limit raises inside the task (the
# job fails as "timeout" and the worker goes on); the hard one kills a pool process stuck where
# Python cannot interrupt it.
HARD_LIMIT_GRACE_S = 10
QUALITIES: tuple[str, ...] = get_args(Quality)  # ("exact", "fast"); "exact" is what a request without the field gets
DEFAULT_REMIX_STRENGTH = 0.6  # the tiny model's choice: bench/remix.py, docs/api.md "Remix"


def time_limits_s(limit_s: int | None, default_s: int) -> tuple[int, int]:
    """(soft, hard) seconds for a job: `limit_s` (a model's own limit), else `default_s`."""
    soft_s = limit_s or default_s
    return soft_s, soft_s + HARD_LIMIT_GRACE_S


class ServedModel(BaseModel):
    name: str
    source: str  # preset name or local folder, as `load_pipeline(source)` takes it
    queue: str = ""  # Celery queue; defaults to "video.<name>"
    sizes: list[str]  # "WxH"
    seconds: list[str]  # strings, as the OpenAI API sends them
    fps: int = Field(gt=0)
    default_size: str = ""
    default_seconds: str = ""
    default_steps: int = Field(gt=0)
    default_guidance: float = Field(ge=1.0)
    max_steps: int = Field(default=100, gt=0)
    time_limit_s: int | None = Field(default=None, gt=0)  # per job; None: SPACETIME_JOB_TIME_LIMIT_S
    # "quality" values a request may ask for; a model served through the diffusers adapter
    # (a pipeline folder not converted to ours) has no fast mode: list only "exact" for it.
    qualities: list[str] = Field(default_factory=lambda: list(QUALITIES))
    # Whether POST /v1/videos/{id}/remix works (our pipeline; not a diffusers folder served as is).
    remix: bool = True
    remix_strength: float = Field(default=DEFAULT_REMIX_STRENGTH, gt=0.0, le=1.0)
    description: str = ""

    @field_validator("sizes")
    @classmethod
    def _check_sizes(cls, sizes: list[str]) -> list[str]:
        for size in sizes:
            width_px, _, height_px = size.partition("x")
            if not (width_px.isdigit() and height_px.isdigit()):
                raise ValueError(f"size {size!r} is not WxH")
        return sizes

    @field_validator("qualities")
    @classmethod
    def _check_qualities(cls, qualities: list[str]) -> list[str]:
        unknown = [q for q in qualities if q not in QUALITIES]
        if unknown or "exact" not in qualities or len(set(qualities)) != len(qualities):
            raise ValueError(f"qualities must list 'exact' and optionally 'fast', once each; got {qualities}")
        return qualities

    @model_validator(mode="after")
    def _fill_defaults(self) -> "ServedModel":
        self.queue = self.queue or f"video.{self.name}"
        self.default_size = self.default_size or self.sizes[0]
        self.default_seconds = self.default_seconds or self.seconds[0]
        if self.default_size not in self.sizes or self.default_seconds not in self.seconds:
            raise ValueError(f"model {self.name}: defaults must be among the allowed sizes / seconds")
        return self

    def time_limits_s(self, default_s: int) -> tuple[int, int]:
        """(soft, hard) seconds for one of this model's jobs: its own limit, else `default_s`."""
        return time_limits_s(self.time_limit_s, default_s)

    def num_frames(self, seconds: str) -> int:
        """Frames for a clip: seconds * fps + 1 (the VAE's 4k+1 rule holds when fps is a multiple of 4)."""
        return int(seconds) * self.fps + 1

    @staticmethod
    def parse_size(size: str) -> tuple[int, int]:
        """'WxH' -> (width_px, height_px)."""
        width_px, height_px = size.split("x")
        return int(width_px), int(height_px)


BUILTIN_MODELS: dict[str, ServedModel] = {
    "spacetime-tiny": ServedModel(
        name="spacetime-tiny",
        source="spacetime-tiny",
        sizes=["128x128", "160x96", "96x160"],
        seconds=["1", "2", "3", "4"],
        fps=8,
        default_size="128x128",
        default_seconds="2",
        default_steps=20,
        default_guidance=3.0,  # as the model folder's own default (model/weights/spacetime-tiny)
        description="The embedded default: a small spacetime-patch DiT that runs on the CPU.",
    ),
}


class Catalog:
    """Name -> ServedModel, the built-ins plus an optional operator JSON file."""

    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models

    @classmethod
    def load(cls, models_file: Path | None = None) -> "Catalog":
        models = dict(BUILTIN_MODELS)
        if models_file is not None:
            try:
                entries = json.loads(Path(models_file).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"cannot read models file {models_file}: {exc}") from exc
            if not isinstance(entries, list):
                raise ValueError(f"models file {models_file} must hold a JSON list of models")
            for entry in entries:
                model = ServedModel.model_validate(entry)
                models[model.name] = model
        return cls(models)

    def get(self, name: str) -> ServedModel | None:
        return self.models.get(name)

    def names(self) -> list[str]:
        return list(self.models)

    @property
    def default(self) -> ServedModel:
        return next(iter(self.models.values()))
