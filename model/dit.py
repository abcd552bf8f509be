"""VideoDiT: a spacetime-patch Diffusion Transformer for video latents.

Layout follows Wan2.1's DiT (diffusers' `WanTransformer3DModel`) so that real Wan2.1 weights
convert into this module one tensor at a time (`model/convert.py`):

    latent (B, C, T, H, W) -> Conv3d patch embed (kernel = stride = patch) -> N tokens of width D
    -> blocks of [adaLN self-attention (3D RoPE, QK RMS-norm) -> cross-attention to text
       -> adaLN MLP] -> final adaLN layer -> unpatchify -> velocity (B, C, T, H, W)

adaLN as in Wan: the timestep embedding goes through ONE shared projection to 6*D numbers and
each block adds its own learned `scale_shift_table` (1, 6, D). Shape letters: B batch, C channels,
T/H/W latent frames/height/width, N tokens, D width, L text length.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.fp8 import runs_fp8

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class DiTConfig:
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw), kernel = stride of the patch embed
    in_channels: int = 16  # VAE latent channels
    out_channels: int = 16
    dim: int = 256  # D, token width
    ffn_dim: int = 768  # MLP hidden width
    num_heads: int = 4
    num_layers: int = 8
    text_dim: int = 256  # width of the text encoder's hidden states
    freq_dim: int = 256  # sinusoidal timestep features
    eps: float = 1e-6
    cross_attn_norm: bool = True  # LayerNorm (affine) before cross-attention, as Wan2.1
    rope_theta: float = 10000.0
    # Absolute position of each patch, as sin/cos features of its normalised (y, x) centre through
    # a zero-initialised Linear added to the tokens. RoPE alone is relative: a patch can tell
    # which side of the frame it is on only from the frame's edges, which the tiny model's
    # two-object layout rule (the first-named object on the left) needs directly. Off for Wan
    # (its weights have no such table); `enable_abs_pos()` adds it to trained weights unchanged.
    abs_pos: bool = False

    def __post_init__(self) -> None:
        self.patch_size = tuple(self.patch_size)
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ValueError("head dim must be even for rotary embeddings")


#################################################################################
#                                   Helpers                                     #
#################################################################################


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift  # x (B, N, D), shift/scale (B, 1, D)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The one place attention is computed: swap the kernel here (SDPA picks Flash/cuDNN on Hopper).

    q (B, heads, N, d), k/v (B, heads, M, d), mask (B, 1, 1, M) bool (True = attend) or None.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, N, d)


ABS_POS_FREQS = 8  # sin/cos of pi*k*u for k = 1..8 per axis: 32 features


def abs_pos_features(grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """(N, 4*ABS_POS_FREQS) float32 features of each token's normalised (y, x) patch centre in
    [0, 1], in (t, h, w) raster order: the same at every frame and for every frame size."""
    t, h, w = grid
    k = torch.arange(1, ABS_POS_FREQS + 1, dtype=torch.float32, device=device) * math.pi  # (K,)
    axes = []
    for n in (h, w):
        u = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n  # (n,)
        axes.append(torch.cat([(u[:, None] * k).sin(), (u[:, None] * k).cos()], dim=-1))  # (n, 2K)
    feats = torch.cat([axes[0][:, None].expand(h, w, -1), axes[1][None].expand(h, w, -1)], dim=-1)  # (h, w, 4K)
    return feats.reshape(1, h * w, -1).expand(t, -1, -1).reshape(t * h * w, -1)  # (N, 4K)


def rope_frequencies(head_dim: int, grid: tuple[int, int, int], theta: float, device: torch.device) -> torch.Tensor:
    """3D RoPE rotations: head_dim split into t/h/w parts (h = w = 2*(d//6), t gets the rest).

    Returns float32 (N, head_dim/2, 2) = (cos, sin) of each angle, N = t*h*w in (t, h, w) raster
    order; rotation pair j acts on channels (2j, 2j+1) (interleaved layout, as Wan). Stored real
    (shards and slices like any tensor), applied as complex numbers (a free view, see apply_rope).
    """
    hw_dim = 2 * (head_dim // 6)
    dims = (head_dim - 2 * hw_dim, hw_dim, hw_dim)
    dtype = torch.float32 if device.type == "mps" else torch.float64  # angles need float64 for long clips
    parts = []
    for axis, (dim, n) in enumerate(zip(dims, grid)):
        inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=dtype, device=device) / dim)  # (dim/2,)
        angles = torch.outer(torch.arange(n, dtype=dtype, device=device), inv_freq)  # (n, dim/2)
        view = [1, 1, 1, dim // 2]
        view[axis] = n
        parts.append(angles.view(view).expand(*grid, dim // 2))  # (t, h, w, dim/2)
    angles = torch.cat(parts, dim=-1).reshape(-1, head_dim // 2)  # (N, head_dim/2)
    return torch.stack((angles.cos(), angles.sin()), dim=-1).float()  # (N, head_dim/2, 2)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, heads, N, d) by rope (N, d/2, 2); float32 math, as diffusers' Wan.

    One complex multiply: measured on an H200 at Wan2.1-1.3B size, real cos/sin arithmetic (with
    a fused q/k/v matmul) made an eager forward 6 % slower (more float32 passes) and a compiled
    one no faster (docs/performance.md)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, heads, N, d/2) complex
    return torch.view_as_real(pairs * torch.view_as_complex(rope)).flatten(-2).type_as(x)  # (B, heads, N, d)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the model dtype (half-precision norms drift)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


#################################################################################
#                          Embedding layers and blocks                          #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1000] -> (B, D): sinusoid (cos first) -> Linear -> SiLU -> Linear."""

    def __init__(self, freq_dim: int, dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]  # (B, freq_dim/2)
        emb = torch.cat([args.cos(), args.sin()], dim=-1).to(self.linear_1.weight.dtype)  # (B, freq_dim)
        return self.linear_2(F.silu(self.linear_1(emb)))  # (B, D)


class TextProjection(nn.Module):
    """Text encoder states -> model width: Linear -> GELU(tanh) -> Linear."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(text_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(y), approximate="tanh"))  # (B, L, D)


class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys (norm across all heads, as Wan)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        rope: torch.Tensor | None = None,
        attend=None,  # replaces `attention` for this call (model/parallel.py: Ulysses over ranks)
    ) -> torch.Tensor:
        # q, k, v stay three matmuls: one fused matmul measured no faster on an H200 at Wan2.1-1.3B size
        # (the GEMMs already run at the peak rate) and leaves q, k, v as strided views (docs/performance.md).
        context = x if context is None else context  # self-attention when no context
        q, k, v = self.q(x), self.k(context), self.v(context)  # (B, N, D), (B, M, D), (B, M, D)
        q = self.norm_q(q).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, heads, N, d)
        k = self.norm_k(k).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, heads, M, d)
        v = v.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, heads, M, d)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = (attend or attention)(q, k, v, mask).transpose(1, 2).flatten(2)  # (B, N, D)
        return self.o(out.type_as(x))


def fused_gelu_device(x: torch.Tensor) -> bool:
    """Whether x may take MLP's fused bias + GELU path: CUDA half precision only. On CUDA
    `torch._addmm_activation(..., use_gelu=True)` applies tanh-GELU (cuBLASLt's epilogue, the
    model's GELU); on the CPU it applies the erf GELU, a different function."""
    return x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)


class MLP(nn.Module):
    """fc1 -> GELU(tanh) -> fc2.

    `fused_gelu` (off by default; `enable_fused_gelu`) runs fc1's bias and GELU in the matmul's
    epilogue (`torch._addmm_activation`, cuBLASLt on CUDA) instead of a separate pass over the
    (tokens, hidden) activation; inductor keeps the op as one extern kernel. Same weights, so the
    state dict does not change. Only without autograd (the op has no derivative), on CUDA in
    half precision (`fused_gelu_device`), and never while fc1 multiplies in FP8 (model/fp8.py)."""

    fused_gelu = False

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def runs_fused(self, x: torch.Tensor) -> bool:
        return (self.fused_gelu and fused_gelu_device(x) and not torch.is_grad_enabled()
                and self.fc1.weight.dtype == x.dtype and not runs_fp8(self.fc1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_fused(x):
            rows = x.reshape(-1, x.shape[-1])  # (B*N, D)
            h = torch._addmm_activation(self.fc1.bias, rows, self.fc1.weight.t(), use_gelu=True)  # (B*N, hidden)
            return self.fc2(h.reshape(*x.shape[:-1], h.shape[-1]))
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN self-attention -> cross-attention -> adaLN MLP; gates (and cross-attn output) zero at init."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm1 = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm2 = FP32LayerNorm(cfg.dim, cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.mlp = MLP(cfg.dim, cfg.ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 6, cfg.dim))  # per-block adaLN offsets

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        t_mod: torch.Tensor,
        rope: torch.Tensor,
        attend=None,  # self-attention kernel override (sequence parallelism), None: `attention`
    ) -> torch.Tensor:
        # x (B, N, D), context (B, L, D), t_mod (B, 6, D): the shared timestep projection
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table.float() + t_mod.float()
        ).chunk(6, dim=1)  # each (B, 1, D), float32
        h = modulate(self.norm1(x), shift_msa, scale_msa).type_as(x)  # (B, N, D)
        x = (x.float() + gate_msa * self.attn(h, rope=rope, attend=attend).float()).type_as(x)  # (B, N, D)
        x = x + self.cross_attn(self.norm2(x.float()).type_as(x), context, context_mask)  # (B, N, D)
        h = modulate(self.norm3(x), shift_mlp, scale_mlp).type_as(x)  # (B, N, D)
        return (x.float() + gate_mlp * self.mlp(h).float()).type_as(x)  # (B, N, D)


class FinalLayer(nn.Module):
    """adaLN (shift, scale from the raw timestep embedding + a table) -> Linear to patch values."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.linear = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_channels)
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table.float() + t.float()[:, None]).chunk(2, dim=1)  # (B, 1, D) each
        return self.linear(modulate(self.norm(x), shift, scale).type_as(x))  # (B, N, pt*ph*pw*C)


#################################################################################
#                                 The model                                     #
#################################################################################


class VideoDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config = cfg
        self.x_embedder = nn.Conv3d(cfg.in_channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.t_embedder = TimestepEmbedder(cfg.freq_dim, cfg.dim)
        self.t_projection = nn.Linear(cfg.dim, 6 * cfg.dim)  # shared adaLN projection (applied after SiLU)
        self.y_embedder = TextProjection(cfg.text_dim, cfg.dim)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.final_layer = FinalLayer(cfg)
        self.pos_embedder = nn.Linear(4 * ABS_POS_FREQS, cfg.dim) if cfg.abs_pos else None
        self.gradient_checkpointing = False
        self._rope_cache: dict[tuple, torch.Tensor] = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        # Patch embed like a Linear over the flattened patch (as DiT).
        nn.init.xavier_uniform_(self.x_embedder.weight.view(self.x_embedder.weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.linear_1.weight, std=0.02)
        nn.init.normal_(self.t_embedder.linear_2.weight, std=0.02)
        # adaLN-Zero: every shift/scale/gate starts at 0 (shared projection and per-block tables), and
        # the ungated cross-attention's output projection starts at 0, so each block starts as the
        # identity; the final projection starts at 0 so a fresh model predicts zero velocity.
        nn.init.zeros_(self.t_projection.weight)
        nn.init.zeros_(self.t_projection.bias)
        for block in self.blocks:
            nn.init.zeros_(block.scale_shift_table)
            nn.init.zeros_(block.cross_attn.o.weight)
            nn.init.zeros_(block.cross_attn.o.bias)
        nn.init.zeros_(self.final_layer.scale_shift_table)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.pos_embedder is not None:  # starts as no change: trained weights keep their outputs
            nn.init.zeros_(self.pos_embedder.weight)
            nn.init.zeros_(self.pos_embedder.bias)

    def enable_abs_pos(self) -> None:
        """Add the absolute position table (zero, so outputs are unchanged) to a model without it."""
        if self.pos_embedder is not None:
            return
        ref = self.x_embedder.weight
        self.pos_embedder = nn.Linear(4 * ABS_POS_FREQS, self.config.dim, device=ref.device, dtype=ref.dtype)
        nn.init.zeros_(self.pos_embedder.weight)
        nn.init.zeros_(self.pos_embedder.bias)
        self.config = replace(self.config, abs_pos=True)  # a copy: presets share their config

    def enable_fused_gelu(self, on: bool = True) -> int:
        """Switch every block MLP's fused bias + GELU epilogue (`MLP.fused_gelu`) on or off; returns
        how many MLPs it set. Weights and state dict unchanged; the path runs on CUDA only."""
        mlps = [m for m in self.modules() if isinstance(m, MLP)]
        for mlp in mlps:
            mlp.fused_gelu = on
        return len(mlps)

    def embed_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Latent (B, C, T, H, W) -> patch tokens (B, N, D) and the token grid (t, h, w)."""
        T, H, W = x.shape[2:]
        pt, ph, pw = self.config.patch_size
        if T % pt or H % ph or W % pw:
            raise ValueError(f"latent (T, H, W) = {(T, H, W)} must be divisible by the patch {self.config.patch_size}")
        grid = (T // pt, H // ph, W // pw)
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2).contiguous()  # (B, N, D)
        if self.pos_embedder is not None:
            key = ("abs", grid, str(x.device))  # cached beside the RoPE tables (same lifetime)
            if key not in self._rope_cache:
                self._rope_cache[key] = abs_pos_features(grid, x.device)
            feats = self._rope_cache[key].to(self.pos_embedder.weight.dtype)
            tokens = tokens + self.pos_embedder(feats).to(tokens.dtype)  # (B, N, D)
        return tokens, grid

    def embed_conditions(
        self, timestep: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None, batch: int,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Timestep and text -> t (B, D), the shared adaLN t_mod (B, 6, D), projected text (B, L, D)
        and its attention mask (B, 1, 1, L) or None."""
        t = self.t_embedder(timestep.expand(batch) if timestep.numel() == 1 else timestep)  # (B, D)
        t_mod = self.t_projection(F.silu(t)).unflatten(1, (6, -1))  # (B, 6, D)
        context = self.y_embedder(context.to(dtype))  # (B, L, D)
        mask = None if context_mask is None else context_mask.bool()[:, None, None, :]  # (B, 1, 1, L)
        return t, t_mod, context, mask

    def rope(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        key = (grid, str(device))
        if key not in self._rope_cache:
            head_dim = self.config.dim // self.config.num_heads
            self._rope_cache[key] = rope_frequencies(head_dim, grid, self.config.rope_theta, device)
        return self._rope_cache[key]

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        (pt, ph, pw), (t, h, w) = self.config.patch_size, grid
        x = x.reshape(x.shape[0], t, h, w, pt, ph, pw, -1)  # (B, t, h, w, pt, ph, pw, C)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, t, pt, h, ph, w, pw)
        return x.reshape(x.shape[0], x.shape[1], t * pt, h * ph, w * pw)  # (B, C, T, H, W)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, C, T, H, W) noisy latent, timestep (B,) in [0, 1000], context (B, L, text_dim),
        context_mask (B, L) bool (True = real token) or None -> velocity (B, C_out, T, H, W)."""
        x, grid = self.embed_tokens(x)  # (B, N, D)
        rope = self.rope(grid, x.device)  # (N, d/2) complex rotations
        t, t_mod, context, mask = self.embed_conditions(timestep, context, context_mask, x.shape[0], x.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, context, mask, t_mod, rope, use_reentrant=False)
            else:
                x = block(x, context, mask, t_mod, rope)  # (B, N, D)
        x = self.final_layer(x, t)  # (B, N, pt*ph*pw*C_out)
        return self.unpatchify(x, grid)  # (B, C_out, T, H, W)

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> VideoDiT:
        folder = Path(folder)
        cfg = DiTConfig(**json.loads((folder / CONFIG_NAME).read_text()))
        with torch.device("meta"):
            model = cls(cfg)
        state = load_file(str(folder / WEIGHTS_NAME), device=str(device))
        model.load_state_dict(state, strict=True, assign=True)
        model.to(device=device, dtype=dtype or state["x_embedder.weight"].dtype)
        model._rope_cache = {}
        return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_forward(cfg: DiTConfig, latent_shape: tuple[int, int, int], text_len: int) -> int:
    """Multiply-adds x 2 for one forward of one sample at latent (T, H, W): linear layers + attention."""
    T, H, W = latent_shape
    pt, ph, pw = cfg.patch_size
    N, D, L = (T // pt) * (H // ph) * (W // pw), cfg.dim, text_len
    patch = N * cfg.in_channels * pt * ph * pw * D
    per_block = (
        4 * N * D * D  # self-attention q, k, v, o
        + 2 * N * N * D  # QK^T and AV over N tokens
        + 2 * N * D * D + 2 * L * D * D  # cross-attention q, o on video tokens; k, v on text
        + 2 * N * L * D  # cross-attention QK^T and AV
        + 2 * N * D * cfg.ffn_dim  # MLP
    )
    text = L * (cfg.text_dim * D + D * D)
    time = cfg.freq_dim * D + D * D + D * 6 * D
    final = N * D * cfg.out_channels * pt * ph * pw
    return 2 * (patch + cfg.num_layers * per_block + text + time + final)
