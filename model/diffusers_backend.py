"""Serve any local diffusers text-to-video pipeline folder (Wan, CogVideoX, LTX-Video, HunyuanVideo, ...)
behind the same call as our own pipeline: same arguments, validation, seed handling, per-step
callback with cancellation, and uint8 (T, H, W, 3) output.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline

from model.pipeline import MAX_SEED, GenerationCancelled, hash_folder, validate_request

# Frame rates the published models were trained at (the model does not condition on fps).
_NATIVE_FPS = {"WanPipeline": 16, "CogVideoXPipeline": 8, "LTXPipeline": 25, "HunyuanVideoPipeline": 24}
_REQUIRED_ARGS = ("prompt", "negative_prompt", "num_frames", "height", "width", "num_inference_steps",
                  "guidance_scale", "generator", "output_type", "callback_on_step_end")


class DiffusersVideoPipeline:
    """A wrapped `DiffusionPipeline`; attributes match `TextToVideoPipeline` where workers read them."""

    is_random_weights = False

    def __init__(self, pipe: DiffusionPipeline, folder: Path):
        params = inspect.signature(pipe.__call__).parameters
        missing = [name for name in _REQUIRED_ARGS if name not in params]
        if missing:
            raise ValueError(f"{type(pipe).__name__} is not a text-to-video pipeline we can serve (no {missing})")
        self.pipe, self.folder, self.name = pipe, folder, f"{type(pipe).__name__} ({folder.name})"
        self._params = params
        self.num_inference_steps = self._default("num_inference_steps", 50)
        self.guidance_scale = float(self._default("guidance_scale", 5.0))
        self.fps = _NATIVE_FPS.get(type(pipe).__name__, 16)
        config = getattr(getattr(pipe, "transformer", None), "config", None)
        spatial = self._vae_factor("vae_scale_factor_spatial", "vae_spatial_compression_ratio", 8)
        patch = getattr(config, "patch_size", 1) if config is not None else 1
        patch = patch[-1] if isinstance(patch, (tuple, list)) else (patch or 1)
        self.frame_step = self._vae_factor("vae_scale_factor_temporal", "vae_temporal_compression_ratio", 4)
        self.side_multiple = spatial * patch
        self.height = self._default("height", None) or getattr(config, "sample_height", 60) * spatial
        self.width = self._default("width", None) or getattr(config, "sample_width", 90) * spatial
        self.num_frames = self._default("num_frames", None) or getattr(config, "sample_frames", 49)

    def _default(self, name: str, fallback: object) -> object:
        default = self._params[name].default if name in self._params else inspect.Parameter.empty
        return fallback if default in (inspect.Parameter.empty, None) else default

    def _vae_factor(self, name: str, alt: str, fallback: int) -> int:
        return int(getattr(self.pipe, name, None) or getattr(self.pipe, alt, None) or fallback)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> DiffusersVideoPipeline:
        folder = Path(folder)
        dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
        pipe = DiffusionPipeline.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)  # progress goes through our callback
        return cls(pipe.to(device), folder)

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @cached_property
    def weights_hash(self) -> str:
        return hash_folder(self.folder)

    def __call__(
        self,
        prompt: str,
        negative_prompt: str = "",
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        callback: Callable[[int, int], bool | None] | None = None,
        mode: str = "exact",
    ) -> np.ndarray:
        if mode != "exact":  # the step cache and guidance window need our own DiT and sampler
            raise ValueError(f"mode {mode!r} is not available for a diffusers-backed model; only 'exact' is")
        num_frames = self.num_frames if num_frames is None else num_frames
        height, width = (self.height if height is None else height), (self.width if width is None else width)
        fps = self.fps if fps is None else fps
        steps = self.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = self.guidance_scale if guidance_scale is None else guidance_scale
        validate_request(prompt, negative_prompt, num_frames, height, width, fps, steps, guidance, seed, callback,
                         frame_step=self.frame_step, side_multiple=self.side_multiple)
        seed = secrets.randbelow(MAX_SEED) if seed is None else int(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)

        def on_step_end(pipe: DiffusionPipeline, step: int, timestep: object, kwargs: dict) -> dict:
            # diffusers counts steps from 0; ours count from 1 like the native sampler
            if callback is not None and callback(step + 1, steps) is False:
                raise GenerationCancelled(f"cancelled after step {step + 1} of {steps}")
            return {}

        extra = {"frame_rate": fps} if "frame_rate" in self._params else {}  # LTX-Video conditions on it
        with torch.inference_mode():
            out = self.pipe(
                prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, height=height, width=width,
                num_inference_steps=steps, guidance_scale=float(guidance), generator=generator,
                output_type="np", callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=[], **extra,
            )
        frames = np.asarray(out.frames[0], dtype=np.float32)  # (T, H, W, 3) in [0, 1]
        return (frames.clip(0, 1) * 255).round().astype(np.uint8)
