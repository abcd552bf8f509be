"""On a CUDA GPU: bf16 pipeline determinism and Wan conversion in half precision (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PRESET, perturb_zero_init

from model.pipeline import TextToVideoPipeline

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_pipeline_on_cuda_is_seed_deterministic():
    pipe = TextToVideoPipeline.from_preset(TINY_PRESET)
    perturb_zero_init(pipe.transformer)
    pipe.to("cuda", torch.bfloat16)
    kwargs = dict(num_frames=9, height=64, width=96, num_inference_steps=3, seed=5)
    a = pipe("a red circle moving left", **kwargs)
    assert a.shape == (9, 64, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, pipe("a red circle moving left", **kwargs))
    assert not np.array_equal(a, pipe("a blue square", **kwargs))


def test_wan_conversion_holds_in_bf16_on_cuda(tmp_path):
    from diffusers import WanTransformer3DModel

    from model.convert import load_wan_transformer

    torch.manual_seed(0)
    wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16,
                                out_channels=16, text_dim=64, freq_dim=64, ffn_dim=256, num_layers=4)
    wan.save_pretrained(str(tmp_path), max_shard_size="1MB")
    wan = WanTransformer3DModel.from_pretrained(str(tmp_path), dtype=torch.bfloat16).to("cuda").eval()
    ours = load_wan_transformer(tmp_path, dtype=torch.bfloat16, device="cuda")
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(2, 16, 5, 12, 20, generator=g, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([900.0, 100.0], device="cuda")
    ctx = torch.randn(2, 32, 64, generator=g, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        expected = wan(x, t, ctx).sample.float()
        got = ours(x, t, ctx, None).float()
    assert (got - expected).norm() / expected.norm() < 2e-2


def test_fp8_matmuls_on_cuda_stay_close_to_bf16():
    """FP8 tensor-core path (torch._scaled_mm with rowwise scales, bf16 out): needs compute
    capability 8.9+ (Ada/Hopper)."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 matmuls need compute capability 8.9 or newer")
    from model.dit import DiTConfig, VideoDiT
    from model.fp8 import enable_fp8, fp8_matmuls

    torch.manual_seed(0)
    cfg = DiTConfig(patch_size=(1, 2, 2), in_channels=16, out_channels=16, dim=256, ffn_dim=512, num_heads=4,
                    num_layers=2, text_dim=64)
    model = perturb_zero_init(VideoDiT(cfg).eval()).to("cuda", torch.bfloat16)
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(2, 16, 5, 12, 20, generator=g, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([900.0, 100.0], device="cuda")
    ctx = torch.randn(2, 32, 64, generator=g, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(x, t, ctx).float()
        assert enable_fp8(model) == 2 * 10
        with fp8_matmuls():
            fast = model(x, t, ctx).float()
        assert torch.equal(model(x, t, ctx).float(), ref)
    err = ((fast - ref).norm() / ref.norm()).item()
    assert 0 < err < 0.2, err


def test_fused_gelu_epilogue_agrees_with_the_mlp_in_bf16_and_compiles():
    """`enable_fused_gelu`: fc1's bias + tanh-GELU in cuBLASLt's epilogue. In bf16 on CUDA the MLP
    and the whole block agree with the unfused ones within bf16 rounding, and compiled blocks run it."""
    from model.dit import DiTConfig, VideoDiT

    torch.manual_seed(0)
    cfg = DiTConfig(dim=256, ffn_dim=1024, num_heads=4, num_layers=1, text_dim=64)
    model = perturb_zero_init(VideoDiT(cfg).eval()).to("cuda", torch.bfloat16)
    block, grid = model.blocks[0], (2, 6, 10)
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(2, 120, 256, generator=g, device="cuda", dtype=torch.bfloat16)  # (B, N, D), N = 2*6*10
    context = torch.randn(2, 16, 256, generator=g, device="cuda", dtype=torch.bfloat16)
    t_mod = torch.randn(2, 6, 256, generator=g, device="cuda", dtype=torch.bfloat16)  # gates ~1: the MLP counts
    rope = model.rope(grid, x.device)
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()  # noqa: E731
    with torch.no_grad():
        plain_mlp, plain = block.mlp(x), block(x, context, None, t_mod, rope)
        assert model.enable_fused_gelu() == 1 and block.mlp.runs_fused(x)
        fused_mlp, fused = block.mlp(x), block(x, context, None, t_mod, rope)
        block.compile()
        compiled = block(x, context, None, t_mod, rope)
    assert rel(fused_mlp, plain_mlp) < 1e-2
    assert rel(fused, plain) < 1e-2 and rel(fused - x, plain - x) < 2e-2
    assert rel(compiled, fused) < 1e-2
