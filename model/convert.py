"""Real Wan2.1 weights -> VideoDiT: read a diffusers `WanTransformer3DModel` folder.

The folder is the `transformer/` subfolder of the public Wan2.1-T2V-*-Diffusers releases:
`config.json` plus either `diffusion_pytorch_model.safetensors` or shards listed in
`diffusion_pytorch_model.safetensors.index.json`. Tensors are renamed, never changed, so the
converted model computes the same function (tested to float tolerance).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from model.dit import DiTConfig, VideoDiT

SINGLE_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"

# (diffusers name pattern, VideoDiT name); applied in order, first match wins.
_RENAMES: list[tuple[str, str]] = [
    (r"^patch_embedding\.", "x_embedder."),
    (r"^condition_embedder\.time_embedder\.", "t_embedder."),
    (r"^condition_embedder\.time_proj\.", "t_projection."),
    (r"^condition_embedder\.text_embedder\.", "y_embedder."),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.attn.o."),
    (r"^blocks\.(\d+)\.attn1\.to_([qkv])\.", r"blocks.\1.attn.\2."),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.attn.norm_\2."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.to_([qkv])\.", r"blocks.\1.cross_attn.\2."),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])\.", r"blocks.\1.cross_attn.norm_\2."),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.mlp.fc1."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.mlp.fc2."),
    (r"^blocks\.(\d+)\.(norm2\.|scale_shift_table$)", r"blocks.\1.\2"),
    (r"^proj_out\.", "final_layer.linear."),
    (r"^scale_shift_table$", "final_layer.scale_shift_table"),
]


def rename_key(name: str) -> str:
    for pattern, replacement in _RENAMES:
        new, count = re.subn(pattern, replacement, name)
        if count:
            return new
    raise ValueError(f"unknown Wan transformer tensor {name!r}: not a text-to-video Wan2.1 checkpoint?")


def dit_config_from_wan(wan: dict) -> DiTConfig:
    """Map a diffusers WanTransformer3DModel config.json to our DiTConfig."""
    if wan.get("image_dim") or wan.get("added_kv_proj_dim"):
        raise ValueError("image-to-video Wan checkpoints (image_dim / added_kv_proj_dim) are not supported")
    if wan.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        raise ValueError(f"unsupported qk_norm {wan['qk_norm']!r}; expected 'rms_norm_across_heads'")
    heads, head_dim = wan.get("num_attention_heads", 40), wan.get("attention_head_dim", 128)
    return DiTConfig(
        patch_size=tuple(wan.get("patch_size", (1, 2, 2))),
        in_channels=wan.get("in_channels", 16),
        out_channels=wan.get("out_channels") or wan.get("in_channels", 16),
        dim=heads * head_dim,
        ffn_dim=wan.get("ffn_dim", 13824),
        num_heads=heads,
        num_layers=wan.get("num_layers", 40),
        text_dim=wan.get("text_dim", 4096),
        freq_dim=wan.get("freq_dim", 256),
        eps=wan.get("eps", 1e-6),
        cross_attn_norm=wan.get("cross_attn_norm", True),
    )


def _weight_files(folder: Path) -> list[Path]:
    if (folder / INDEX_FILE).exists():
        weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / SINGLE_FILE).exists():
        return [folder / SINGLE_FILE]
    raise FileNotFoundError(f"{folder}: neither {SINGLE_FILE} nor {INDEX_FILE} found")


def load_wan_transformer(folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> VideoDiT:
    """Build a VideoDiT from a diffusers Wan2.1 transformer folder (shards are read one at a time)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: no config.json (expected a diffusers WanTransformer3DModel folder)")
    cfg = dit_config_from_wan(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        model = VideoDiT(cfg)
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for name in f.keys():
                if name.endswith("norm_added_q.weight"):
                    continue  # unused leftovers in some releases (diffusers ignores them too)
                tensor = f.get_tensor(name)
                state[rename_key(name)] = tensor.to(dtype) if dtype else tensor
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"Wan checkpoint does not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model._rope_cache = {}
    return model.to(device).eval()
