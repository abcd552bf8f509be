"""Prompt -> uint8 frames (T, H, W, 3): text encoder, VideoDiT sampler, video VAE.

On disk a pipeline is one folder with a top-level `model_index.json` and one subfolder per
component: `transformer/` (VideoDiT config.json + model.safetensors), `vae/` (diffusers
AutoencoderKLWan), `text_encoder/` (transformers T5/UMT5), `tokenizer/`.

`load_pipeline(source)` is what workers call: `source` is a preset name or a local folder
(ours, a diffusers Wan2.1 folder converted onto our kernels, or any other diffusers
text-to-video pipeline served through `model/diffusers_backend.py`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import secrets
import warnings
from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.dit import VideoDiT
from model.presets import Preset, SamplingDefaults, get_preset
from model.sampling import REMIX_STRENGTH, GenerationCancelled, remix_start, sample_latents
from model.step_cache import FastSampling
from model.text_encoder import TextEncoder, build_text_encoder
from model.vae import (build_vae, decode_latents, decode_needs_tiling, encode_video, from_uint8_frames, latent_shape,
                       load_vae, to_uint8_frames, use_fast_cpu_kernels)

__all__ = ["TextToVideoPipeline", "load_pipeline", "GenerationCancelled", "validate_request"]

INDEX_NAME = "model_index.json"
RANDOM_WEIGHTS_WARNING = "random weights: output will not follow the prompt"
MAX_SEED = 2**63 - 1
MODES = ("exact", "fast")  # fast: forecast steps + step cache + guidance window (model/step_cache.py), opt-in


def validate_request(
    prompt: object, negative_prompt: object, num_frames: object, height: object, width: object, fps: object,
    num_inference_steps: object, guidance_scale: object, seed: object, callback: object,
    frame_step: int = 4, side_multiple: int = 16,
) -> None:
    """Raise ValueError naming the allowed values for the first bad argument."""

    def is_int(x: object) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if not isinstance(negative_prompt, str):
        raise ValueError("negative_prompt must be a string (may be empty)")
    if not is_int(num_frames) or num_frames < 1 or (num_frames - 1) % frame_step:
        examples = ", ".join(str(frame_step * k + 1) for k in range(5))
        raise ValueError(f"num_frames must be {frame_step}k+1 ({examples}, ...), got {num_frames!r}")
    for name, side in (("height", height), ("width", width)):
        if not is_int(side) or side < side_multiple or side % side_multiple:
            raise ValueError(f"{name} must be a positive multiple of {side_multiple} "
                             f"({side_multiple}, {2 * side_multiple}, {3 * side_multiple}, ...), got {side!r}")
    if not is_int(fps) or not 1 <= fps <= 120:
        raise ValueError(f"fps must be an integer from 1 to 120, got {fps!r}")
    if not is_int(num_inference_steps) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer (1, 2, ...), got {num_inference_steps!r}")
    if (not isinstance(guidance_scale, (int, float)) or isinstance(guidance_scale, bool)
            or not math.isfinite(guidance_scale) or guidance_scale < 1):
        raise ValueError(f"guidance_scale must be a finite number >= 1 (1 disables guidance), got {guidance_scale!r}")
    if seed is not None and (not is_int(seed) or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be None or an integer from 0 to {MAX_SEED}, got {seed!r}")
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable (step, total) -> bool, or None")


def hash_folder(folder: Path) -> str:
    """sha256 over every weight file (relative name + bytes), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".pth")):
        digest.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def batch_arguments(
    prompt: str | list[str], negative_prompt: str | list[str], seed: int | list[int | None] | None,
) -> tuple[list[str], list[str], list[int | None]]:
    """One clip's or a batch's prompt, negative prompt and seed -> three lists of equal length B.
    A batch takes one negative prompt for all or one per clip, and one seed per clip (or None)."""
    if not isinstance(prompt, (list, tuple)):
        return [prompt], [negative_prompt], [seed]  # type: ignore[list-item]  (validated later)
    prompts = list(prompt)
    if not prompts:
        raise ValueError("prompt must be a non-empty string or a non-empty list of strings")
    negatives = list(negative_prompt) if isinstance(negative_prompt, (list, tuple)) else [negative_prompt] * len(prompts)
    if seed is not None and not isinstance(seed, (list, tuple)):
        raise ValueError("a batch of prompts takes a list of seeds (one per clip) or None")
    seeds = [None] * len(prompts) if seed is None else list(seed)
    if not len(prompts) == len(negatives) == len(seeds):
        raise ValueError(f"{len(prompts)} prompts need as many negative prompts and seeds, "
                         f"got {len(negatives)} and {len(seeds)}")
    return prompts, negatives, seeds


def check_init_video(init_video: object, strength: float, num_frames: int, height: int, width: int) -> None:
    """A remix's source clip must be uint8 (num_frames, height, width, 3), strength in (0, 1]."""
    remix_start(1, strength)  # raises on a strength outside (0, 1]
    if not isinstance(init_video, np.ndarray) or init_video.dtype != np.uint8:
        raise ValueError("init_video must be a uint8 numpy array (frames, height, width, 3)")
    if init_video.shape != (num_frames, height, width, 3):
        raise ValueError(f"init_video has shape {init_video.shape}; this request needs "
                         f"{(num_frames, height, width, 3)} (frames, height, width, RGB)")


class TextToVideoPipeline:
    supports_batch = True  # __call__ takes a list of prompts with per-clip seeds (the worker batches jobs)
    supports_remix = True  # __call__ takes init_video + strength (a remix of an existing clip)

    def __init__(
        self, transformer: VideoDiT, text_encoder: TextEncoder, vae: nn.Module, defaults: SamplingDefaults,
        name: str = "custom", folder: Path | None = None, is_random_weights: bool = False,
    ):
        self.transformer, self.text_encoder, self.vae = transformer, text_encoder, vae
        self.defaults, self.name, self.folder = defaults, name, folder
        self.is_random_weights = is_random_weights
        self.vae_tiling: bool | None = None  # None: automatic (model.vae.decode_needs_tiling)
        self.fast_sampling = FastSampling()  # what mode="fast" uses
        self.split_guidance = False  # exact mode: the guided pair as two batch-B forwards, not one of 2B
        self.last_stats: dict = {}  # the last call's sampler counters (steps, forwards, cached_forwards, ...)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(cls, preset: str | Preset, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> TextToVideoPipeline:
        """Build a preset with random weights from its fixed seed (the starting point for training)."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        if preset.dit.text_dim != preset.text.d_model:
            raise ValueError(f"{preset.name}: DiT text_dim {preset.dit.text_dim} != text encoder d_model {preset.text.d_model}")
        with torch.random.fork_rng(devices=[]):  # a fixed seed without touching the caller's RNG
            torch.manual_seed(preset.seed)
            dit = VideoDiT(preset.dit)
            text = build_text_encoder(preset.text)
            vae = build_vae(preset.vae)
        pipe = cls(dit.eval(), text, vae, copy.deepcopy(preset.defaults), preset.name, is_random_weights=True)
        return pipe.to(device, dtype)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> TextToVideoPipeline:
        dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
        self.transformer.to(device=device, dtype=dtype)
        self.text_encoder.to(device=device, dtype=dtype)
        self.vae.to(device=device).float()  # the VAE is small next to the DiT; keep it exact
        use_fast_cpu_kernels(self.vae)  # no-op off the CPU
        self.transformer._rope_cache = {}
        return self

    def compile_transformer(self, backend: str = "inductor", dynamic: bool | None = None) -> None:
        """Regional torch.compile: each DiT block compiled in place (the blocks share one graph; the
        state dict keeps its keys). On an H200 at Wan2.1-1.3B size a forward went from 599.5 ms eager
        to ~517 ms (docs/performance.md), for about a minute of compiling once per process. Off by
        default: on the CPU the tiny model gains 6-10 % for 24-63 s of compiling.
        `dynamic` goes to torch.compile: None (its default) recompiles once a shape changes, with
        that dimension symbolic (fast mode alternates batch 2 and 1, so its batch goes symbolic);
        False keeps one static graph per shape (up to dynamo's recompile limit)."""
        for block in self.transformer.blocks:
            block.compile(backend=backend, dynamic=dynamic)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def num_inference_steps(self) -> int:
        return self.defaults.num_inference_steps

    @property
    def guidance_scale(self) -> float:
        return self.defaults.guidance_scale

    @cached_property
    def weights_hash(self) -> str:
        if self.folder is not None:
            return hash_folder(self.folder)
        digest = hashlib.sha256()  # no files: hash the tensors themselves
        for module in (self.transformer, self.text_encoder, self.vae):
            for key, tensor in sorted(module.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write model_index.json + transformer/, vae/, text_encoder/, tokenizer/ (dtype: e.g. float16 to ship)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(folder / "transformer", dtype=dtype)
        self.text_encoder.save_pretrained(folder / "text_encoder", folder / "tokenizer", dtype=dtype)
        vae = self.vae if dtype is None else copy.deepcopy(self.vae).type(dtype)
        vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
        index = {
            "_class_name": "TextToVideoPipeline", "_spacetime_version": 1, "name": self.name,
            "defaults": asdict(self.defaults),
            "transformer": "VideoDiT", "text_encoder": type(self.text_encoder.encoder).__name__,
            "tokenizer": type(self.text_encoder.tokenizer).__name__, "vae": type(self.vae).__name__,
        }
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> TextToVideoPipeline:
        folder = Path(folder)
        index = json.loads((folder / INDEX_NAME).read_text())
        if index.get("_class_name") == "WanPipeline":
            return _from_wan_folder(folder, device, dtype)
        if index.get("_class_name") != "TextToVideoPipeline":
            raise ValueError(f"{folder}: model_index.json is a {index.get('_class_name')!r}, not a TextToVideoPipeline")
        dit = VideoDiT.from_pretrained(folder / "transformer")
        text = TextEncoder.from_pretrained(folder / "text_encoder", folder / "tokenizer")
        vae = load_vae(folder / "vae")
        pipe = cls(dit, text, vae, SamplingDefaults(**index["defaults"]), index.get("name", folder.name), folder)
        return pipe.to(device, dtype)

    # ------------------------------------------------------------------ generation

    def resolve_request(
        self, prompt: str, negative_prompt: str, num_frames: int | None, height: int | None, width: int | None,
        fps: int | None, num_inference_steps: int | None, guidance_scale: float | None, seed: int | None,
        callback: Callable[[int, int], bool | None] | None,
    ) -> tuple[int, int, int, int, int, float]:
        """None -> the model's default; then validate. Returns (num_frames, height, width, fps, steps, guidance)."""
        d = self.defaults
        num_frames = d.num_frames if num_frames is None else num_frames
        height, width = (d.height if height is None else height), (d.width if width is None else width)
        fps = d.fps if fps is None else fps
        steps = d.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = d.guidance_scale if guidance_scale is None else guidance_scale
        validate_request(prompt, negative_prompt, num_frames, height, width, fps, steps, guidance, seed, callback)
        return num_frames, height, width, fps, steps, guidance

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | list[int | None] | None = None,
        callback: Callable[[int, int], bool | None] | None = None,
        mode: str = "exact",
        init_video: np.ndarray | None = None,
        strength: float = REMIX_STRENGTH,
    ) -> np.ndarray:
        """Generate one clip -> numpy uint8 (num_frames, height, width, 3). None -> the model's defaults.

        A list of B prompts (with one seed each, and one negative prompt or B) generates B clips of
        one shape in one batched denoise -> (B, num_frames, height, width, 3); each clip equals the
        clip generated alone with its seed, to float tolerance (exact mode: the step cache decides
        for the whole batch, so fast-mode clips in a batch differ from fast-mode clips alone).
        mode: "exact" (every step, full guidance) or "fast" (`self.fast_sampling`: forecast steps,
        the step cache and a guidance window; faster, slightly different frames).
        init_video (uint8 (num_frames, height, width, 3), one prompt only) makes this a remix: the
        clip is encoded by the VAE, noised to `strength` of the schedule, and the last
        round(strength * steps) steps run with the prompt (SDEdit; model.sampling.remix_start).
        Lower strength keeps more of the source's layout and motion."""
        d = self.defaults
        # 1. Fill in the defaults and validate everything before any work.
        prompts, negatives, seeds = batch_arguments(prompt, negative_prompt, seed)
        for one_prompt, one_negative, one_seed in zip(prompts, negatives, seeds):
            num_frames, height, width, fps, steps, guidance = self.resolve_request(
                one_prompt, one_negative, num_frames, height, width, fps, num_inference_steps, guidance_scale,
                one_seed, callback)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if init_video is not None:
            if isinstance(prompt, (list, tuple)):
                raise ValueError("a remix (init_video) takes one prompt, not a batch")
            check_init_video(init_video, strength, num_frames, height, width)
        seeds = [secrets.randbelow(MAX_SEED) if s is None else int(s) for s in seeds]
        device, B = self.device, len(prompts)

        # 2. Encode the prompts and (for guidance) the negative prompts in one batch.
        texts = prompts if guidance == 1 else prompts + negatives
        states, mask = self.text_encoder.encode(texts, device)  # (B|2B, L, d), (B|2B, L)
        cond = (states[:B], mask[:B])
        uncond = None if guidance == 1 else (states[B:], mask[B:])

        # 3. Denoise from seeded noise, each clip's from its own seed.
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        stats: dict = {}
        shape = (B, self.vae.config.z_dim, *latent_shape(num_frames, height, width, self.vae))
        init_latents = None if init_video is None else self.encode_frames(init_video)  # (1, z, T', H', W')
        latents = sample_latents(
            self.transformer, shape, cond, uncond, steps, float(guidance), generators[0] if B == 1 else generators,
            scheduler=d.scheduler, shift=d.shift, callback=callback,
            fast=self.fast_sampling if mode == "fast" else None, stats=stats, split_guidance=self.split_guidance,
            init_latents=init_latents, strength=strength,
        )  # (B, z, T', H', W')
        self.last_stats = {"mode": mode, **stats}

        # 4. Decode (spatially tiled when memory is short) and convert to uint8.
        tiling = self.vae_tiling
        if tiling is None:
            tiling = decode_needs_tiling(self.vae, B, height, width, latents.device)
        video = decode_latents(self.vae, latents, tiling=tiling)  # (B, 3, T, H, W)
        if not isinstance(prompt, (list, tuple)):
            return to_uint8_frames(video[0])  # (T, H, W, 3)
        return np.stack([to_uint8_frames(clip) for clip in video])  # (B, T, H, W, 3)

    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised latents (1, z, T', H', W'): the posterior's mean, so a
        remix depends only on its source and seed. Tiled when the decode of this size would be."""
        height, width = frames.shape[1:3]
        tiling = self.vae_tiling
        if tiling is None:
            tiling = decode_needs_tiling(self.vae, 1, height, width, self.device)
        if tiling:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        return encode_video(self.vae, from_uint8_frames(frames, self.device)[None], sample=False).float()


def _from_wan_folder(folder: Path, device: str | torch.device, dtype: torch.dtype | None) -> TextToVideoPipeline:
    """A diffusers Wan2.1 text-to-video folder, converted onto our DiT (runs on our kernels)."""
    from model.convert import load_wan_transformer

    for sub in ("transformer", "text_encoder", "tokenizer", "vae"):
        if not (folder / sub).is_dir():
            raise FileNotFoundError(f"{folder}: missing {sub}/ (expected the Wan2.1-T2V-*-Diffusers layout)")
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    dit = load_wan_transformer(folder / "transformer", dtype=dtype)  # cast tensor by tensor: 14B fp32 is 57 GB
    text = TextEncoder.from_pretrained(folder / "text_encoder", folder / "tokenizer", dtype=dtype)
    vae = load_vae(folder / "vae")
    preset = "wan2.1-14b" if dit.config.dim >= 5120 else "wan2.1-1.3b"
    defaults = copy.deepcopy(get_preset(preset).defaults)
    scheduler_cfg = folder / "scheduler" / "scheduler_config.json"
    if scheduler_cfg.exists():  # the release's own flow shift wins over our preset's
        defaults.shift = float(json.loads(scheduler_cfg.read_text()).get("flow_shift", defaults.shift))
    return TextToVideoPipeline(dit, text, vae, defaults, f"{preset} ({folder.name})", folder).to(device, dtype)


def load_pipeline(source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, backend: str = "auto"):
    """A preset name or a local folder -> a callable pipeline (see docs/contracts.md).

    backend: "auto" (ours for our folders, presets and Wan2.1; the diffusers adapter for other
    diffusers pipelines), "native" or "diffusers" (serve even a Wan folder through diffusers).
    """
    if backend not in ("auto", "native", "diffusers"):
        raise ValueError(f"backend must be 'auto', 'native' or 'diffusers', got {backend!r}")
    path = Path(source)
    if path.is_dir():
        if not (path / INDEX_NAME).exists():
            raise FileNotFoundError(f"{path}: no {INDEX_NAME}; expected a save_pretrained folder or a diffusers pipeline folder")
        class_name = json.loads((path / INDEX_NAME).read_text()).get("_class_name")
        if class_name == "TextToVideoPipeline" and backend == "diffusers":
            raise ValueError(f"{path} is a native spacetime folder; load it with backend 'auto' or 'native'")
        native = class_name == "TextToVideoPipeline" or (class_name == "WanPipeline" and backend != "diffusers")
        if native and backend != "diffusers":
            return TextToVideoPipeline.from_pretrained(path, device, dtype)
        if backend == "native":
            raise ValueError(f"{path}: a {class_name} folder cannot run on the native backend")
        from model.diffusers_backend import DiffusersVideoPipeline

        return DiffusersVideoPipeline.from_pretrained(path, device, dtype)
    preset = get_preset(str(source))  # raises with the list of presets and the folder hint
    if preset.weights_dir is not None and (preset.weights_dir / INDEX_NAME).exists():
        return TextToVideoPipeline.from_pretrained(preset.weights_dir, device, dtype)
    if preset.weights_dir is None:
        raise ValueError(f"{preset.name} weights are not shipped: pass the local folder of the "
                         f"Wan2.1-T2V Diffusers release instead (see docs/model.md)")
    warnings.warn(f"{preset.name}: no trained weights at {preset.weights_dir}; {RANDOM_WEIGHTS_WARNING}", stacklevel=2)
    return TextToVideoPipeline.from_preset(preset, device, dtype)
