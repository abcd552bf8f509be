"""Settings for the gateway and the workers: one pydantic-settings class, env prefix SPACETIME_.

`get_settings()` is cached and used as a FastAPI dependency, so tests override it with
`app.dependency_overrides[get_settings]` or by building the app with explicit settings.
Outside embedded mode the class refuses the shipped placeholder secrets.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Placeholders that must never reach a non-embedded deployment.
DEFAULT_SECRET = "change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPACETIME_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Embedded mode (`spacetime up`): loopback only, open access, generated secrets.
    embedded: bool = False
    # "keys": Bearer API keys required. "open": every request is the owner "local".
    auth: Literal["keys", "open"] = "keys"

    # HMAC secrets. key_pepper hashes API keys at rest; webhook_secret ("whsec_<base64>",
    # Standard Webhooks style) signs webhook payloads.
    key_pepper: str = DEFAULT_SECRET
    webhook_secret: str = DEFAULT_SECRET

    # Storage: "local" (a folder) or "s3" (boto3, any S3-compatible endpoint).
    storage: Literal["local", "s3"] = "local"
    data_dir: Path = Path("var/videos")
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_prefix: str = "videos/"
    output_ttl_s: int = Field(default=24 * 3600, ge=1)  # assets expire this long after completion
    cleanup_interval_s: float = Field(default=60.0, gt=0)

    # Served models: the built-in catalogue plus this JSON file (see service/catalog.py).
    models_file: Path | None = None

    # Limits per API key.
    rate_limit_per_minute: int = Field(default=600, ge=0)  # requests per key per minute; 0 = off
    create_limit_per_minute: int = Field(default=30, ge=0)  # video creates per key per minute; 0 = off
    max_active_jobs: int = Field(default=4, ge=1)  # queued + in_progress per key
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_prompt_chars: int = Field(default=2000, ge=1)

    # Jobs and workers.
    device: str = "cpu"  # where a worker runs its pipelines ("cpu", "cuda", "cuda:1")
    cpu_threads: int = Field(default=0, ge=0)  # torch threads per CPU worker process; 0 = cores / pool processes
    compile_model: bool = False  # torch.compile the DiT blocks once per worker process (GPU: ~14 % per step)
    fast_fp8: bool = False  # "quality": "fast" jobs also multiply the DiT blocks' linears in FP8 (model/fp8.py)
    # "quality": "fast" jobs run the transformer at least once per this fraction of the schedule and
    # reuse its output between (model/step_cache.py); 0 turns forecasting off, larger is faster.
    fast_forecast_gap: float = Field(default=0.1, ge=0.0, le=1.0)
    # Encode, sign and store a job's video on a background thread while the next job denoises
    # (workers/overlap.py). Off: the whole job runs inside its task, as before.
    overlap_encode: bool = True
    # Jobs of one model and shape denoised together in one batched pipeline call: a worker that
    # starts a job claims up to max_batch - 1 queued look-alikes. 1 (no batching) suits the CPU;
    # on a GPU, small clips fill it better in batches of 4-8 (docs/performance.md).
    max_batch: int = Field(default=1, ge=1)
    poll_after_ms: int = 1000  # openai-poll-after-ms hint on queued / in_progress jobs
    job_time_limit_s: int = Field(default=1800, ge=1)  # hard limit per generation
    max_attempts: int = Field(default=3, ge=1)  # deliveries of one job before it fails
    heartbeat_s: float = Field(default=2.0, gt=0)  # worker heartbeat period; dead after 3 misses
    webhook_attempts: int = Field(default=5, ge=1)
    webhook_backoff_s: float = Field(default=2.0, gt=0)  # first retry delay, doubles each time
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Hosts / addresses / CIDRs webhooks may reach although not public (SSRF guard, see webhooks.py)
    webhook_allow_hosts: str = ""
    idempotency_ttl_s: int = 24 * 3600

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if self.embedded:
            return self
        bad = [name for name in ("key_pepper", "webhook_secret") if getattr(self, name) == DEFAULT_SECRET]
        if bad:
            env = ", ".join(f"SPACETIME_{n.upper()}" for n in bad)
            raise ValueError(
                f"refusing to start with the placeholder secret for {env}; set it to a random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or run embedded mode"
            )
        if self.auth == "open":
            raise ValueError("SPACETIME_AUTH=open is only allowed in embedded mode (loopback, `spacetime up`)")
        return self

    @property
    def heartbeat_ttl_s(self) -> float:
        return self.heartbeat_s * 3


@lru_cache
def get_settings() -> Settings:
    return Settings()
