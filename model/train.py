"""`spacetime train`: the tiny model's two stages, on the shapes world or a folder of clips.

Stage 1, VAE (`--stage vae`): `AutoencoderKLWan` of the preset's shape learns to reconstruct
clips (L1 + MSE + a spatial-gradient L1 for crisp edges + a small KL). Afterwards the
per-channel latent mean / std are measured on fresh clips and written into the VAE's config,
so the DiT sees unit-scale latents.

Stage 2, DiT + text encoder (`--stage dit`): both trained jointly from scratch with the
flow-matching loss (`model.sampling.flow_matching_loss`) on latents of the frozen VAE, with
~10 % of captions dropped to "" so classifier-free guidance has an unconditional model.

Both stages: AdamW, linear warm-up then cosine decay over the stage's budget (steps and/or
seconds, whichever ends first), bf16 autocast on CUDA, EMA of the weights (exported), a
checkpoint every `--ckpt-every-s` and at the end, `--resume` from the last checkpoint,
progress lines with the loss. The end result is a `save_pretrained` folder (fp16 by default)
that `load_pipeline` opens.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.data.buckets import Batch, Bucket, ShapesWorldStream, all_buckets, batch_size_for
from model.data.shapes import COLOURS, MOTIONS, SHAPES, SIZES

VAE_CKPT, DIT_CKPT = "ckpt-vae.pt", "ckpt-dit.pt"
VAE_DONE = "vae"          # save_pretrained folder of the finished VAE (with latent statistics)
EXPORT = "pipeline"       # the final pipeline folder inside --out (unless --export says where)


@dataclass
class TrainConfig:
    preset: str = "spacetime-tiny"
    out: str = "out/train"
    export: str | None = None        # default: <out>/pipeline
    stage: str = "all"               # "vae", "dit" or "all"
    data: str = "shapes"             # "shapes" or a folder of .mp4 + captions (model.data.video_folder)
    init: str | None = None          # start from a pipeline folder (fine-tuning) instead of random
    init_vae: str | None = None      # take the VAE alone from this pipeline folder (overrides init's)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    workers: int = 0                 # processes drawing shapes-world plans
    export_dtype: str = "float16"
    log_every: int = 50
    ckpt_every_s: float = 120.0
    resume: bool = False
    # stage 1
    vae_steps: int = 0               # 0: bounded by vae_time_s only
    vae_time_s: float = 0.0          # 0: bounded by vae_steps only
    vae_voxels: int = 16 * 9 * 128 * 128
    vae_frames: int = 9              # the VAE trains on one bucket: vae_frames at the first size
    vae_eager: bool = False          # skip the CUDA-graph capture of the VAE step
    vae_lr: float = 1e-3
    vae_kl: float = 1e-5
    vae_edge: float = 0.5
    # stage 2
    dit_steps: int = 0
    dit_time_s: float = 0.0
    dit_voxels: int = 48 * 17 * 128 * 128
    dit_max_batch: int = 256          # clips per DiT batch at most (short, small buckets hit it first)
    dit_frames: tuple[int, ...] = (9, 17, 25, 33)
    cache_clips_per_bucket: int = 3000  # shapes world: clips encoded once per bucket
    cache_time_s: float = 60.0          # ... or fewer, when filling the cache takes this long
    cache_voxels: int = 128 * 17 * 128 * 128  # pixels x frames per encoder call
    dit_lr: float = 5e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    pair_share: float = 0.5          # shapes world: share of two-object scenes
    caption_noise: float = 0.0       # shapes world: share of captions with style words ("..., cinematic, 4k")
    timestep_shift: float = 1.0      # >1 trains more at high noise, where layout and colour are decided
    abs_pos: bool = False            # DiT stage: add the absolute (y, x) position table (zero-initialised)
    text_abs_pos: bool = False       # DiT stage: add the text encoder's word-position table
    text_abs_pos_init: float = 0.0   # its start: 0 zeros (outputs unchanged), > 0 sinusoids at this x the embeddings' RMS
    bind_loss: float = 0.0           # shapes world: weight of the auxiliary word-binding loss (0: off)
    bind_target: str = "object"      # what each colour/shape/motion word must carry: "object" (its attributes) or "slot"
    bucket_draw: str = "cached"      # shapes world: a DiT batch's bucket drawn by its cached clips ("cached") or evenly ("uniform")
    grad_clip: float = 1.0
    sizes: tuple[tuple[int, int], ...] = SIZES

    def __post_init__(self) -> None:
        """The options that take one of a few names, checked however the config is made (CLI or code)."""
        for name, allowed in (("bind_target", ("object", "slot")), ("bucket_draw", ("cached", "uniform"))):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} must be {' or '.join(map(repr, allowed))}, got {value!r}")

    def budget(self, stage: str) -> tuple[int, float]:
        steps, secs = (self.vae_steps, self.vae_time_s) if stage == "vae" else (self.dit_steps, self.dit_time_s)
        if steps <= 0 and secs <= 0:
            raise ValueError(f"stage {stage}: give --{stage}-steps or --{stage}-time-s (or both)")
        return steps, secs


# ----------------------------------------------------------------------------- helpers


def progress(step: int, elapsed_s: float, steps: int, secs: float) -> float:
    """Fraction of the stage done: whichever of the step and time budgets is nearer its end."""
    return max(step / steps if steps > 0 else 0.0, elapsed_s / secs if secs > 0 else 0.0)


def learning_rate(peak: float, step: int, frac: float, warmup: int) -> float:
    """Linear warm-up, then cosine from peak to 10 % of it as `frac` goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return peak * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac))))


class EMA:
    """Exponential moving average of a module's float parameters (fp32 shadow copies)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().float().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short memory early on
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in module.parameters()], 1 - decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for s, p in zip(self.shadow, module.parameters()):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> list[torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: list[torch.Tensor]) -> None:
        self.shadow = [s.to(self.shadow[0].device) for s in shadow]


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def batches(cfg: TrainConfig, frames: tuple[int, ...], voxels: int, device: torch.device,
            seed: int) -> Iterator[Batch]:
    """Training batches from the shapes world (training split only) or the video folder."""
    if cfg.data == "shapes":
        return ShapesWorldStream(voxels, seed, device, all_buckets(cfg.sizes, frames), pair_share=cfg.pair_share,
                                 caption_noise=cfg.caption_noise).prefetched(cfg.workers)
    from model.data.video_folder import VideoFolderDataset

    dataset = VideoFolderDataset(cfg.data, max_frames=max(frames), sizes=cfg.sizes)
    clip = dataset[0][0]
    batch_size = max(1, voxels // (clip.shape[1] * clip.shape[2] * clip.shape[3]))
    return dataset.batches(batch_size, seed, device)


def save_ckpt(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-write keeps the previous checkpoint


class Logger:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "train.log", "a", buffering=1)

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")


# ----------------------------------------------------------------------------- stage 1


def vae_loss(vae: nn.Module, video: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """video (B, 3, T, H, W) in [-1, 1] -> scalar loss and its parts."""
    dist = vae.encode(video).latent_dist
    recon = vae.decode(dist.sample()).sample.float()                 # (B, 3, T, H, W)
    err = recon - video
    l1, l2 = err.abs().mean(), err.pow(2).mean()
    # Edges: compare horizontal and vertical pixel differences (shapes are mostly edges).
    edge = sum((torch.diff(recon, dim=d) - torch.diff(video, dim=d)).abs().mean() for d in (3, 4))
    kl = 0.5 * (dist.mean.float().pow(2) + dist.var.float() - 1 - dist.logvar.float()).mean()
    loss = l1 + l2 + cfg.vae_edge * edge + cfg.vae_kl * kl
    psnr = 10 * torch.log10(4.0 / l2.detach().clamp(min=1e-10))    # range 2 -> peak^2 = 4
    return loss, dict(l1=l1.detach(), kl=kl.detach(), psnr=psnr)  # tensors: no sync mid-graph


class VAEStep:
    """One optimisation step of the VAE on a fixed-shape batch, replayed as a CUDA graph.

    The Wan VAE is thousands of small kernels per step (causal chunks, norms, caches), so on a
    GPU launch overhead, not arithmetic, bounds it; capturing fwd + bwd + AdamW once and
    replaying it removes that. Falls back to eager execution (CPU, or if capture fails).
    """

    def __init__(self, vae: nn.Module, cfg: TrainConfig, shape: tuple[int, ...], device: torch.device,
                 log: Callable[[str], None]) -> None:
        self.vae, self.cfg, self.device, self.log = vae, cfg, device, log
        self.graph = None
        self.static_video = torch.zeros(shape, device=device)
        self._build_optimizer(capturable=device.type == "cuda" and not cfg.vae_eager)
        if device.type == "cuda" and not cfg.vae_eager:
            try:
                self._capture()
            except Exception as exc:  # noqa: BLE001 - any capture failure: run eagerly instead
                log(f"[vae] CUDA graph capture failed ({type(exc).__name__}: {exc}); running eagerly")
                self.graph = None
                torch.cuda.synchronize()
                self._build_optimizer(capturable=False)

    def _build_optimizer(self, capturable: bool) -> None:
        lr = torch.tensor(self.cfg.vae_lr, device=self.device) if capturable else self.cfg.vae_lr
        self.opt = torch.optim.AdamW(self.vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0,
                                     capturable=capturable)

    def _forward_backward(self) -> tuple[torch.Tensor, dict]:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda",
                            cache_enabled=False):
            loss, parts = vae_loss(self.vae, self.static_video, self.cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), self.cfg.grad_clip, foreach=True)
        self.opt.step()
        return loss, parts

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        for group in self.opt.param_groups:
            group["lr"].fill_(0.0)  # warm-up steps on the empty buffer must not move the weights
        with torch.cuda.stream(side):  # warm-up outside the graph, as torch.cuda.graph requires
            for _ in range(3):
                self.opt.zero_grad(set_to_none=True)
                self._forward_backward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.static_loss, self.static_parts = self._forward_backward()
        self.log("[vae] training step captured as a CUDA graph")

    def __call__(self, video: torch.Tensor, lr: float) -> dict:
        for group in self.opt.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self.static_video.copy_(video)
        if self.graph is not None:
            self.graph.replay()
            return self.static_parts
        self.opt.zero_grad(set_to_none=True)
        return self._forward_backward()[1]


def train_vae(cfg: TrainConfig, vae: nn.Module, device: torch.device, log: Callable[[str], None]) -> nn.Module:
    """Train on one fixed bucket (`vae_frames` at the first size): a convolutional VAE
    carries over to the other sizes and lengths, and a fixed shape lets the step be a graph."""
    out = Path(cfg.out)
    steps, secs = cfg.budget("vae")
    vae.to(device=device, dtype=torch.float32).train()
    height, width = cfg.sizes[0]
    bucket = Bucket(cfg.vae_frames, height, width)
    batch_size = batch_size_for(bucket, cfg.vae_voxels)
    step, elapsed, resumed = 0, 0.0, None
    if cfg.resume and (out / VAE_CKPT).exists():
        resumed = torch.load(out / VAE_CKPT, map_location=device, weights_only=False)
        vae.load_state_dict(resumed["model"])
        step, elapsed = resumed["step"], resumed["elapsed_s"]
    ema = EMA(vae, cfg.ema_decay)
    train_step = VAEStep(vae, cfg, (batch_size, 3, bucket.num_frames, height, width), device, log)
    if resumed is not None:  # after capture: the warm-up steps must not overwrite resumed weights
        with torch.no_grad():
            vae.load_state_dict(resumed["model"])
        train_step.opt.load_state_dict(resumed["opt"])
        ema.load_state_dict(resumed["ema"])
        log(f"[vae] resumed at step {step} ({elapsed:.0f} s done)")
    if cfg.data == "shapes":
        data = ShapesWorldStream(cfg.vae_voxels, cfg.seed + step, device, [bucket]).prefetched(cfg.workers)
    else:
        data = batches(cfg, (cfg.vae_frames,), cfg.vae_voxels, device, cfg.seed + step)

    def checkpoint() -> None:
        save_ckpt(out / VAE_CKPT, model=vae.state_dict(), opt=train_step.opt.state_dict(),
                  ema=ema.state_dict(), step=step, elapsed_s=elapsed)

    start, last_ckpt, window = time.perf_counter() - elapsed, time.perf_counter(), []
    while progress(step, elapsed, steps, secs) < 1.0:
        video = next(data).video
        if video.shape != train_step.static_video.shape:  # a real-data batch of another shape
            video = _fit_batch(video, train_step.static_video.shape)
        lr = learning_rate(cfg.vae_lr, step, progress(step, elapsed, steps, secs), cfg.warmup_steps)
        parts = train_step(video, lr)
        ema.update(vae, step)
        step += 1
        window.append(torch.stack([parts["l1"], parts["psnr"], parts["kl"]]).detach().clone())
        elapsed = time.perf_counter() - start
        if step % cfg.log_every == 0 or step == 1:
            l1, psnr, kl = torch.stack(window).float().mean(0).tolist()
            log(f"[vae] step {step} loss-l1 {l1:.4f} psnr {psnr:.2f} dB kl {kl:.2f} lr {lr:.2e} "
                f"{step / elapsed:.2f} steps/s batch {batch_size} elapsed {elapsed:.0f} s")
            if not math.isfinite(l1):
                raise FloatingPointError(f"[vae] loss is {l1} at step {step}; lower --vae-lr")
            window = []
        if time.perf_counter() - last_ckpt > cfg.ckpt_every_s:
            checkpoint()
            last_ckpt = time.perf_counter()
    checkpoint()
    ema.copy_to(vae)
    log(f"[vae] done: {step} steps in {elapsed:.0f} s")
    return vae.eval()


def _fit_batch(video: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Repeat / trim clips and crop frames so a batch matches the captured step's shape."""
    b, _, t, h, w = shape
    video = video[:, :, :t]
    video = F.interpolate(video.flatten(1, 2), size=(h, w), mode="bilinear", align_corners=False)
    video = video.unflatten(1, (3, t))
    reps = -(-b // video.shape[0])
    return video.repeat(reps, 1, 1, 1, 1)[:b]


@torch.no_grad()
def measure_latent_stats(vae: nn.Module, cfg: TrainConfig, device: torch.device,
                         num_batches: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of posterior means over fresh clips -> (C,), (C,)."""
    data = batches(cfg, cfg.dit_frames, cfg.vae_voxels, device, cfg.seed + 999_983)
    total, total_sq, count = 0.0, 0.0, 0
    for _ in range(num_batches):
        with autocast(device):
            z = vae.encode(next(data).video).latent_dist.mode().float()   # (B, C, T, H, W)
        total = total + z.sum(dim=(0, 2, 3, 4))
        total_sq = total_sq + z.pow(2).sum(dim=(0, 2, 3, 4))
        count += z.numel() // z.shape[1]
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp(min=1e-8).sqrt()
    return mean.cpu(), std.cpu()


# ----------------------------------------------------------------------------- stage 2


class Denoiser(nn.Module):
    """DiT + text encoder as one module, so one optimizer, EMA and clip step cover both.

    `binding`: with `--bind-loss`, a linear head on the text encoder's states (trained, never
    exported) that must read, at each colour, shape and motion word, its object's colour, shape
    and motion ("object") or which of the caption's objects it names ("slot"); see `binding_loss`."""

    def __init__(self, dit: nn.Module, text_encoder: nn.Module, binding: str | None = None) -> None:
        super().__init__()
        self.dit, self.text_encoder = dit, text_encoder
        outputs = {None: 0, "object": len(COLOURS) + len(SHAPES) + len(MOTIONS), "slot": 2}[binding]
        self.binding_target = binding
        self.binding = nn.Linear(text_encoder.dim, outputs) if binding else None


@functools.lru_cache(maxsize=4)
def _binding_word_ids(tokenizer) -> tuple[frozenset[int], ...]:
    """Token ids of every colour word, shape word and motion key word (once per tokenizer, not per step)."""
    from model.data.captions import COLOUR_WORDS, MOTION_KEY_WORDS, SHAPE_WORDS

    return tuple(frozenset(tokenizer.convert_tokens_to_ids(w) for ws in words.values() for w in ws)
                 for words in (COLOUR_WORDS, SHAPE_WORDS, MOTION_KEY_WORDS))


def binding_targets(tokenizer, ids: torch.Tensor, scenes: list) -> torch.Tensor:
    """-> (N, 7) long rows (caption, token position, object index, objects in the scene, colour,
    shape, motion): every colour word, shape word and motion key word ("left" of "moves to the
    left", `captions.motion_key_word`) of a shapes-world caption with the object it names.

    The k-th word of each kind names the k-th object (every caption template keeps the scene's
    order); captions whose word counts do not match the scene (dropped captions, style-padded
    ones that lost a word to truncation) give no rows.
    """
    kinds = _binding_word_ids(tokenizer)
    rows = []
    for b, (row, scene) in enumerate(zip(ids.tolist(), scenes)):
        n = len(scene.objects)
        found = [[j for j, t in enumerate(row) if t in kind] for kind in kinds]
        if any(len(positions) != n for positions in found):
            continue
        for k, obj in enumerate(scene.objects):
            target = (COLOURS.index(obj.colour), SHAPES.index(obj.shape), MOTIONS.index(obj.motion))
            rows += [(b, positions[k], k, n, *target) for positions in found]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 7)


def binding_loss(head: nn.Linear, states: torch.Tensor, targets: torch.Tensor, target: str = "object") -> torch.Tensor:
    """Cross-entropy of what `target` asks for, read from the state at each target word.

    Why: trained through the DiT alone, the tiny text encoder stayed a bag of words (a probe at
    each shape word found its own object's colour at 44-50 %, bench/text_probe.py), so the DiT
    cannot tell which colour and motion go with which shape in a two-object prompt.
    "object": every word of an object must carry the whole object (colour, shape and motion; the
    mean of the three losses), so the DiT finds it at any of them. "slot": every word of a
    two-object caption must say whether it names the first or the second object, so each word
    keeps its own meaning plus an object index (single-object captions give no rows).
    """
    if target == "slot":
        targets = targets[targets[:, 3] == 2]
    if not len(targets):
        return states.sum() * 0.0
    logits = head(states[targets[:, 0], targets[:, 1]].float())  # (N, outputs)
    if target == "slot":
        return F.cross_entropy(logits, targets[:, 2])
    splits = logits.split([len(COLOURS), len(SHAPES), len(MOTIONS)], dim=1)
    return sum(F.cross_entropy(z, targets[:, 4 + i]) for i, z in enumerate(splits)) / 3


def _latent_source(cfg: TrainConfig, vae: nn.Module, device: torch.device, rng: np.random.Generator,
                   log: Callable[[str], None]) -> Callable[[], tuple[torch.Tensor, list[str], list | None]]:
    """-> a function giving (normalised latents (B, C, T', H', W'), captions, scenes or None) per step.

    Shapes world: a `LatentCache` filled once (captions redrawn per use). A video folder:
    encoded on the fly (real fine-tuning sets are small and their clips are few).
    """
    from model.vae import encode_video

    def encode(video: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(device):
            return encode_video(vae, video, sample=False).float()  # posterior mean, as the stats

    if cfg.data != "shapes":
        data = batches(cfg, cfg.dit_frames, cfg.dit_voxels, device, int(rng.integers(2**31)))

        def from_folder() -> tuple[torch.Tensor, list[str], None]:
            batch = next(data)
            return encode(batch.video), batch.captions, None
        return from_folder

    from model.data.latent_cache import LatentCache

    cache, started = LatentCache(), time.perf_counter()
    cache.fill(encode, all_buckets(cfg.sizes, cfg.dit_frames), cfg.cache_clips_per_bucket,
               cfg.cache_time_s, cfg.cache_voxels, int(rng.integers(2**31)), device, cfg.pair_share)
    log(f"[dit] latent cache: {len(cache)} clips in {time.perf_counter() - started:.0f} s")

    def from_cache() -> tuple[torch.Tensor, list[str], list]:
        batch = cache.sample(cfg.dit_voxels, rng, max_batch=cfg.dit_max_batch, caption_noise=cfg.caption_noise,
                             uniform=cfg.bucket_draw == "uniform")
        return batch.video, batch.captions, batch.scenes
    return from_cache


def train_dit(cfg: TrainConfig, pipe, device: torch.device, log: Callable[[str], None]) -> None:
    """Train pipe.transformer and pipe.text_encoder in place; leaves the EMA weights in them."""
    from model.sampling import flow_matching_loss

    out = Path(cfg.out)
    steps, secs = cfg.budget("dit")
    pipe.vae.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    if cfg.abs_pos:  # a no-op when the DiT has it; before the optimizer and any resume
        pipe.transformer.enable_abs_pos()
    if cfg.text_abs_pos:  # the same for the text encoder's word positions
        pipe.text_encoder.enable_abs_pos(cfg.text_abs_pos_init)
    if cfg.bind_loss > 0 and cfg.data != "shapes":
        raise ValueError("--bind-loss needs the shapes world's scene labels (--data shapes)")
    net = Denoiser(pipe.transformer, pipe.text_encoder, binding=cfg.bind_target if cfg.bind_loss > 0 else None).to(device=device, dtype=torch.float32).train()
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=cfg.weight_decay),
                             dict(params=no_decay, weight_decay=0.0)], lr=cfg.dit_lr, betas=(0.9, 0.99),
                            fused=device.type == "cuda")
    ema = EMA(net, cfg.ema_decay)
    step, elapsed = 0, 0.0
    if cfg.resume and (out / DIT_CKPT).exists():
        ck = torch.load(out / DIT_CKPT, map_location=device, weights_only=False)
        net.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), ema.load_state_dict(ck["ema"])
        step, elapsed = ck["step"], ck["elapsed_s"]
        log(f"[dit] resumed at step {step} ({elapsed:.0f} s done)")
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + step)
    rng = np.random.default_rng(cfg.seed + 2 + step)
    next_latents = _latent_source(cfg, pipe.vae, device, rng, log)
    start, last_ckpt, losses, bind_losses, clips = time.perf_counter() - elapsed, time.perf_counter(), [], [], 0

    def checkpoint() -> None:
        save_ckpt(out / DIT_CKPT, model=net.state_dict(), opt=opt.state_dict(), ema=ema.state_dict(),
                  step=step, elapsed_s=elapsed)

    while progress(step, elapsed, steps, secs) < 1.0:
        latents, captions, scenes = next_latents()
        captions = ["" if rng.random() < cfg.caption_dropout else c for c in captions]
        lr = learning_rate(cfg.dit_lr, step, progress(step, elapsed, steps, secs), cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast(device):
            ids, mask = net.text_encoder.tokenize(captions, device)
            states, mask = net.text_encoder(ids, mask)                  # (B, L, d), (B, L)
            loss = flow_matching_loss(net.dit, latents, states, mask, generator=gen,
                                      shift=cfg.timestep_shift)
            if net.binding is not None:
                bind = binding_loss(net.binding, states, binding_targets(net.text_encoder.tokenizer, ids, scenes).to(device),
                                    net.binding_target)
                bind_losses.append(bind.detach())
                loss = loss + cfg.bind_loss * bind
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(net, step)
        step += 1
        clips += len(captions)
        elapsed = time.perf_counter() - start
        losses.append(loss.detach())
        if step % cfg.log_every == 0 or step == 1:
            mean = torch.stack(losses).float().mean().item()
            bind = f" (bind {torch.stack(bind_losses).float().mean().item():.4f})" if bind_losses else ""
            log(f"[dit] step {step} loss {mean:.4f}{bind} lr {lr:.2e} {step / max(elapsed, 1e-9):.2f} steps/s "
                f"batch {len(captions)} clips {clips} elapsed {elapsed:.0f} s")
            if not math.isfinite(mean):
                raise FloatingPointError(f"[dit] loss is {mean} at step {step}; lower --dit-lr")
            losses, bind_losses = [], []
        if time.perf_counter() - last_ckpt > cfg.ckpt_every_s:
            checkpoint()
            last_ckpt = time.perf_counter()
    checkpoint()
    ema.copy_to(net)
    net.eval()
    log(f"[dit] done: {step} steps, {clips} clips in {elapsed:.0f} s")


# ----------------------------------------------------------------------------- driver


def train(cfg: TrainConfig, log: Callable[[str], None] | None = None, preset=None) -> Path:
    """Run the configured stages and export the pipeline folder; returns its path.

    `preset`: a `model.presets.Preset` to use instead of looking `cfg.preset` up (tests pass
    tiny shapes this way).
    """
    from model.pipeline import TextToVideoPipeline
    from model.vae import load_vae, set_latent_stats

    if cfg.stage not in ("vae", "dit", "all"):
        raise ValueError(f"--stage must be 'vae', 'dit' or 'all', got {cfg.stage!r}")
    for stage in ("vae", "dit"):
        if cfg.stage in (stage, "all"):
            cfg.budget(stage)  # fail before any work when a stage has no budget
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or Logger(out)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but CUDA is not available; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    if cfg.init:
        pipe = TextToVideoPipeline.from_pretrained(cfg.init, device="cpu", dtype=torch.float32)
    else:
        pipe = TextToVideoPipeline.from_preset(preset or cfg.preset, device="cpu", dtype=torch.float32)
    if cfg.init_vae:  # e.g. a fresh DiT + text encoder on a VAE trained elsewhere, or a newer VAE
        pipe.vae = load_vae(Path(cfg.init_vae) / "vae")
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    log(f"config: {json.dumps(asdict(cfg))}")

    if cfg.stage in ("vae", "all"):
        vae = train_vae(cfg, pipe.vae, device, log)
        mean, std = measure_latent_stats(vae, cfg, device)
        set_latent_stats(vae, mean, std)
        log(f"[vae] latent mean {[round(float(m), 3) for m in mean]} std {[round(float(s), 3) for s in std]}")
        vae.to("cpu").save_pretrained(str(out / VAE_DONE), safe_serialization=True)
        pipe.vae = vae
    elif not (cfg.init or cfg.init_vae):  # a DiT stage on its own needs a trained VAE
        if not (out / VAE_DONE).is_dir():
            raise FileNotFoundError(f"--stage dit needs a trained VAE at {out / VAE_DONE} (run --stage vae) or --init")
        pipe.vae = load_vae(out / VAE_DONE)

    if cfg.stage in ("dit", "all"):
        train_dit(cfg, pipe, device, log)

    export = Path(cfg.export) if cfg.export else out / EXPORT
    pipe.is_random_weights = False
    pipe.to("cpu", torch.float32)
    pipe.save_pretrained(export, dtype=getattr(torch, cfg.export_dtype))
    size_mb = sum(f.stat().st_size for f in export.rglob("*") if f.is_file()) / 1e6
    log(f"exported {export} ({size_mb:.1f} MB, {cfg.export_dtype})")
    return export


HELP = {
    "stage": "vae, dit or all", "data": "'shapes' or a folder of .mp4 + captions",
    "init": "start from this pipeline folder (fine-tuning) instead of random weights",
    "init_vae": "take only the VAE from this pipeline folder (a fresh or --init DiT trains on it)",
    "out": "checkpoints, train.log and the exported pipeline/ go here",
    "workers": "processes drawing shapes-world scenes", "resume": "continue from <out>/ckpt-*.pt",
    "vae_time_s": "VAE stage budget in seconds (0: steps only)", "dit_time_s": "DiT stage budget in seconds",
    "vae_voxels": "pixels x frames per VAE batch", "dit_voxels": "pixels x frames per DiT batch",
    "dit_max_batch": "clips per DiT batch at most, whatever --dit-voxels allows (shapes world)",
    "vae_frames": "frames of the VAE's training clips (4k+1)", "vae_eager": "no CUDA-graph capture",
    "cache_clips_per_bucket": "shapes world: clips encoded once per bucket for the DiT stage",
    "caption_dropout": "share of empty captions (unconditional model for guidance)",
    "timestep_shift": "shift of the logit-normal noise levels (the sampler uses the preset's shift)",
    "pair_share": "shapes world: share of two-object scenes (0-1)",
    "caption_noise": "shapes world: share of captions padded with style words, mostly unknown ones (0-1)",
    "abs_pos": "give the DiT an absolute (y, x) position table (zero-initialised, so --init weights keep "
               "their outputs until trained; the exported config records it)",
    "text_abs_pos": "give the text encoder a learned word-position table (zero-initialised; T5's relative "
                    "bias alone left the tiny encoder a bag of words, docs/training.md)",
    "text_abs_pos_init": "start of that table: 0 = zeros (outputs unchanged; moved 0.002 in 400 CPU steps), "
                         "> 0 = sinusoids at this times the word embeddings' RMS (word order from step 1)",
    "bind_loss": "shapes world: weight of an auxiliary loss asking each colour, shape and motion word's encoder state "
                 "to carry what --bind-target names (0 = off; the head is not exported)",
    "bind_target": "object: each word carries its object's colour, shape and motion (binds, but a held-out "
                   "colour-shape pair then reads as a new code); slot: each word carries which object it names",
    "bucket_draw": "shapes world: cached = each DiT batch's bucket drawn in proportion to its cached clips (a "
                   "time-limited cache holds ~3.7x more 9-frame than 33-frame clips); uniform = every bucket alike",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if f.name == "sizes":
            parser.add_argument(flag, nargs="+", default=None, help="WxH buckets (default: 128x128 160x96 96x160)")
        elif isinstance(value, bool):
            parser.add_argument(flag, action="store_true", help=HELP.get(f.name))
        elif isinstance(value, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=list(value), help=HELP.get(f.name))
        else:
            kind = type(value) if value is not None else str
            parser.add_argument(flag, type=kind, default=value, help=HELP.get(f.name))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    values["dit_frames"] = tuple(values["dit_frames"])
    for t in (values["vae_frames"], *values["dit_frames"]):
        if (t - 1) % 4:
            raise ValueError(f"frame counts must be 4k+1 (9, 17, 25, 33...), got {t}")
    for name in ("pair_share", "caption_noise", "caption_dropout"):
        if not 0.0 <= values[name] <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1, got {values[name]}")
    if values["sizes"] is None:
        values["sizes"] = SIZES
    else:
        sizes = []
        for text in values["sizes"]:
            w, _, h = text.partition("x")
            if not (w.isdigit() and h.isdigit()) or int(w) % 16 or int(h) % 16:
                raise ValueError(f"--sizes: expected WxH with multiples of 16, got {text!r}")
            sizes.append((int(h), int(w)))
        values["sizes"] = tuple(sizes)
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0
