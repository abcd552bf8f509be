"""Real Wan2.1 weights: a diffusers WanTransformer3DModel folder converts into the same function."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanTransformer3DModel

from model.convert import dit_config_from_wan, load_wan_transformer, rename_key

WAN_TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                text_dim=16, freq_dim=32, ffn_dim=40, num_layers=3, cross_attn_norm=True, rope_max_seq_len=64)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    torch.manual_seed(0)
    wan = WanTransformer3DModel(**WAN_TINY).eval()
    folder = tmp_path_factory.mktemp("wan") / "transformer"
    wan.save_pretrained(str(folder), max_shard_size="30KB")  # the sharded layout of the real releases
    return wan, folder


def test_sharded_folder_is_what_we_convert(wan_folder):
    _, folder = wan_folder
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1


@pytest.mark.parametrize("shape", [(3, 6, 10), (1, 8, 4)])  # multi-frame non-square, and a single frame
def test_converted_model_matches_diffusers(wan_folder, shape):
    wan, folder = wan_folder
    ours = load_wan_transformer(folder)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, *shape, generator=g)
    t = torch.tensor([999.0, 37.5])
    ctx = torch.randn(2, 7, 16, generator=g)
    with torch.no_grad():
        expected = wan(x, t, ctx).sample
        got = ours(x, t, ctx, None)
    assert expected.abs().mean() > 1e-3  # a real, non-trivial function
    rel = (got - expected).norm() / expected.norm()
    assert rel < 1e-4, f"relative error {rel:.2e}"


def test_config_mapping_and_refusals():
    cfg = dit_config_from_wan({**WAN_TINY, "patch_size": [1, 2, 2]})
    assert (cfg.dim, cfg.num_heads, cfg.ffn_dim, cfg.num_layers, cfg.text_dim) == (24, 2, 40, 3, 16)
    with pytest.raises(ValueError, match="image-to-video"):
        dit_config_from_wan({**WAN_TINY, "image_dim": 1280})
    with pytest.raises(ValueError, match="qk_norm"):
        dit_config_from_wan({**WAN_TINY, "qk_norm": "rms_norm"})
    with pytest.raises(ValueError, match="unknown Wan transformer tensor"):
        rename_key("blocks.0.something_new.weight")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_wan_transformer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(WAN_TINY))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_wan_transformer(tmp_path)
