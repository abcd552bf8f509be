"""Request and response bodies. `VideoPublic` has the fields of the openai SDK's `Video` type
plus our extensions (seed, negative_prompt, num_inference_steps, guidance_scale, fps, quality,
strength)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

VideoStatus = Literal["queued", "in_progress", "completed", "failed"]
Quality = Literal["exact", "fast"]  # fast: forecast steps + step cache + guidance window (docs/performance.md), opt-in
Variant = Literal["video", "thumbnail", "spritesheet"]


def check_webhook_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("webhook_url must be an http:// or https:// URL")
    return value


# The fields a create and a remix both take, with their bounds in one place.
Prompt = Annotated[str, Field(min_length=1)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Steps = Annotated[int, Field(ge=1)]
Guidance = Annotated[float, Field(ge=1.0, le=30.0)]
WebhookUrl = Annotated[str, AfterValidator(check_webhook_url)]


class VideoCreate(BaseModel):
    """POST /v1/videos, as JSON or as the multipart form the openai SDK sends (all strings)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    model: str | None = None
    seconds: str | None = None
    size: str | None = None
    negative_prompt: str = ""
    seed: Seed | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    fps: int | None = Field(default=None, ge=1)
    quality: Quality = "exact"
    webhook_url: WebhookUrl | None = None
    # Accepted so the SDK's field name gets a clear "not supported" instead of "extra field".
    input_reference: Any = None

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class VideoRemix(BaseModel):
    """POST /v1/videos/{id}/remix: a new prompt for a completed video. The remix keeps the source's
    model, size, seconds and fps; the other fields default to the source's, except the seed (new)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    # How much of the schedule is run again from the source: 1 ignores the source; lower keeps
    # more of its layout and motion (model.sampling.remix_start). Default: DEFAULT_REMIX_STRENGTH.
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    negative_prompt: str | None = None
    seed: Seed | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    quality: Quality | None = None
    webhook_url: WebhookUrl | None = None


class VideoError(BaseModel):
    code: str
    message: str


class VideoPublic(BaseModel):
    id: str
    object: Literal["video"] = "video"
    status: VideoStatus
    progress: int = 0
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    prompt: str
    seconds: str
    size: str
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    # Extensions: everything needed to reproduce the video.
    seed: int
    negative_prompt: str = ""
    num_inference_steps: int
    guidance_scale: float
    fps: int
    quality: Quality = "exact"
    strength: float | None = None  # remixes only: the share of the schedule run again from the source
    queue_position: int | None = None  # 0 = next to run; only while queued


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "spacetime"
    sizes: list[str]
    seconds: list[str]
    fps: int
    default_size: str
    default_seconds: str
    default_steps: int
    default_guidance: float
    max_steps: int
    qualities: list[str]  # the `quality` values this model accepts ("exact", and "fast" where it has a fast mode)
    remix: bool  # whether its videos can be remixed (POST /v1/videos/{id}/remix)
    remix_strength: float  # a remix's strength when the request names none
    description: str = ""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
