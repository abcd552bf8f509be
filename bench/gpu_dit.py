"""Per-forward speed of our VideoDiT against diffusers' WanTransformer3DModel, same GPU, same process.

    python bench/gpu_dit.py                       # wan2.1-1.3b dims, 81 frames 480x832 (32,760 tokens)
    python bench/gpu_dit.py --frames 21 --height 240 --width 416 --iters 3   # a quick look

Both models hold the same random bf16 weights (ours converted from diffusers' state dict with
model/convert.py's renames), see the same input, and are timed with CUDA events (median of
`--iters` after warm-up). "compiled" means regional compilation: `torch.compile` on each
transformer block (the 30 blocks share one compiled graph), for both models alike.

The floor is what the GPU's measured rates allow: attention FLOPs at the cuDNN SDPA rate measured
at this shape plus every other FLOP at the measured bf16 matmul rate.

"ours eager, tried variant" runs our model with a variant patched in (RoPE as real cos/sin
arithmetic, q/k/v as one fused matmul) for an A/B on the same GPU: it measured slower in eager and
no faster compiled (docs/performance.md), so the model keeps its kernels. "ours compiled, fused GELU
epilogue" is ours compiled with `VideoDiT.enable_fused_gelu()` (the MLP's bias + tanh-GELU in the
up-projection's cuBLASLt epilogue instead of a Triton pass over the (tokens, 8960) activation). The
last part profiles one compiled forward of each model (and of the fused-GELU variant) and splits
CUDA kernel time into matmuls, attention, Triton (inductor's fused elementwise/norm kernels) and
the rest: where the gap to the floor is.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model.dit as dit_module  # noqa: E402
from model.convert import rename_key  # noqa: E402
from model.dit import VideoDiT, flops_per_forward  # noqa: E402
from model.presets import get_preset  # noqa: E402


def time_cuda(fn, iters: int, warmup: int) -> float:
    """Median milliseconds of fn() over iters runs, after warmup runs."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def matmul_rate(iters: int) -> float:
    """Measured bf16 matmul TFLOP/s on an 8192^3 product."""
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = time_cuda(lambda: a @ b, iters=max(iters, 10), warmup=3)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def attention_rate(backend: SDPBackend, heads: int, tokens: int, head_dim: int, iters: int,
                   token_major: bool = False) -> float:
    """Measured SDPA TFLOP/s for one (1, heads, tokens, head_dim) self-attention, or 0 if unsupported.

    token_major: q/k/v are (1, tokens, heads, head_dim) tensors seen through .transpose(1, 2), the
    strided layout the models hand to SDPA (the projections write tokens-major), instead of
    contiguous (1, heads, tokens, head_dim)."""
    shape = (1, tokens, heads, head_dim) if token_major else (1, heads, tokens, head_dim)
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if token_major:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    try:
        with sdpa_kernel(backend):
            ms = time_cuda(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), iters, warmup=2)
    except RuntimeError:
        return 0.0
    return 4 * heads * tokens**2 * head_dim / (ms * 1e-3) / 1e12


@contextmanager
def tried_variant_kernels():
    """The variant tried and measured: RoPE as real cos/sin arithmetic, self-attention q/k/v as one matmul."""

    def apply_rope(x, rope):  # rope (N, d/2, 2) = (cos, sin)
        cos, sin = rope.unbind(-1)
        x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)

    def forward(self, x, context=None, mask=None, rope=None, attend=None):
        if context is None:
            weight = torch.cat((self.q.weight, self.k.weight, self.v.weight))
            bias = torch.cat((self.q.bias, self.k.bias, self.v.bias))
            q, k, v = torch.nn.functional.linear(x, weight, bias).chunk(3, dim=-1)
        else:
            q, k, v = self.q(x), self.k(context), self.v(context)
        q = self.norm_q(q).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        k = self.norm_k(k).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        v = v.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return self.o(dit_module.attention(q, k, v, mask).transpose(1, 2).flatten(2).type_as(x))

    saved = dit_module.Attention.forward
    dit_module.Attention.forward = forward
    try:
        yield
    finally:
        dit_module.Attention.forward = saved


def kernel_breakdown(fn) -> dict[str, float]:
    """CUDA kernel milliseconds of one fn() by kind, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        name = event.name.lower()
        us = event.time_range.elapsed_us()  # a kernel event's range is its time on the GPU
        if any(s in name for s in ("flash", "fmha", "sdpa", "attention", "attn")):
            kinds["attention"] += us / 1e3
        elif any(s in name for s in ("gemm", "nvjet", "xmma", "cutlass", "matmul", "cublas", "sm90_")):
            kinds["matmul"] += us / 1e3
        elif "triton" in name:
            kinds["triton (fused elementwise/norms)"] += us / 1e3
        else:
            kinds["other"] += us / 1e3
    return dict(kinds)


def build_models(preset: str) -> tuple[torch.nn.Module, VideoDiT]:
    from diffusers import WanTransformer3DModel

    cfg = get_preset(preset).dit
    with torch.device("cuda"):  # initialise on the GPU: a 1.4B-parameter CPU init takes minutes
        wan = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.dim // cfg.num_heads,
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=cfg.eps,
        ).to("cuda", torch.bfloat16).eval()
        ours = VideoDiT(cfg)
    state = {rename_key(k): v for k, v in wan.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return wan, ours.to("cuda", torch.bfloat16).eval()


def compile_blocks(model: torch.nn.Module) -> None:
    for i, block in enumerate(model.blocks):
        model.blocks[i] = torch.compile(block)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="wan2.1-1.3b")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--text-len", type=int, default=512)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_dit.py needs a CUDA GPU")
        return 2

    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = get_preset(args.preset).dit
    latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
    gen = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, cfg.in_channels, *latent, device="cuda", dtype=torch.bfloat16, generator=gen)
    t = torch.tensor([700.0], device="cuda")
    ctx = torch.randn(1, args.text_len, cfg.text_dim, device="cuda", dtype=torch.bfloat16, generator=gen)

    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | python {platform.python_version()}")
    import diffusers

    print(f"# diffusers {diffusers.__version__} | {args.preset} | {args.frames} frames {args.height}x{args.width} "
          f"| latent {latent} | {tokens} tokens | text {args.text_len}")
    mm = matmul_rate(args.iters)
    head_dim = cfg.dim // cfg.num_heads
    rates = {b.name: attention_rate(b, cfg.num_heads, tokens, head_dim, args.iters)
             for b in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION)}
    strided = attention_rate(SDPBackend.CUDNN_ATTENTION, cfg.num_heads, tokens, head_dim, args.iters, token_major=True)
    print(f"# bf16 matmul {mm:.0f} TFLOP/s | SDPA " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
          + f" TFLOP/s | CUDNN_ATTENTION on the models' token-major strided q/k/v {strided:.0f} TFLOP/s")

    total = flops_per_forward(cfg, latent, args.text_len)
    attn = cfg.num_layers * 4 * tokens * tokens * cfg.dim
    floor_ms = (attn / (rates["CUDNN_ATTENTION"] * 1e12) + (total - attn) / (mm * 1e12)) * 1e3
    print(f"# FLOPs per forward {total / 1e12:.1f} T (self-attention {attn / 1e12:.1f} T) | floor {floor_ms:.0f} ms")

    wan, ours = build_models(args.preset)
    with torch.inference_mode():
        ref = wan(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0].float()
        out = ours(x, t, ctx).float()
    rel = ((out - ref).norm() / ref.norm()).item()

    rows: list[tuple[str, float]] = []

    def run(name: str, model_fn, ctxmgr=nullcontext) -> None:
        with torch.inference_mode(), ctxmgr():
            rows.append((name, time_cuda(model_fn, args.iters, args.warmup)))
        print(f"  {name}: {rows[-1][1]:.1f} ms", flush=True)

    wan_fn = lambda: wan(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)  # noqa: E731
    ours_fn = lambda: ours(x, t, ctx)  # noqa: E731
    run("diffusers eager (default SDPA)", wan_fn)
    run("ours eager (default SDPA)", ours_fn)
    run("ours eager, tried variant (real RoPE, fused q/k/v)", ours_fn, tried_variant_kernels)
    breakdowns = {}
    if not args.no_compile:
        compile_blocks(wan)
        compile_blocks(ours)
        run("diffusers compiled (default SDPA)", wan_fn)
        run("ours compiled (default SDPA)", ours_fn)
        with torch.inference_mode():
            out_c = ours(x, t, ctx).float()
            rel_c = ((out_c - ref).norm() / ref.norm()).item()
        ours.enable_fused_gelu()  # a guard of the compiled blocks: compiles a second graph
        run("ours compiled, fused GELU epilogue", ours_fn)
        with torch.inference_mode():
            rel_g = ((ours(x, t, ctx).float() - ref).norm() / ref.norm()).item()
            for name, fn, fused in (("diffusers compiled", wan_fn, False), ("ours compiled", ours_fn, False),
                                    ("ours compiled, fused GELU", ours_fn, True)):
                ours.enable_fused_gelu(fused)
                try:
                    breakdowns[name] = kernel_breakdown(fn)
                except Exception as exc:  # the profiler is a diagnostic: never lose the timings to it
                    print(f"  profiler failed for {name}: {exc!r}")
    anchor = dict(rows).get("diffusers compiled (default SDPA)", rows[0][1])

    print()
    print(f"| run | ms / forward | speed vs anchor | TFLOP/s | share of floor |")
    print(f"|---|---:|---:|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {anchor / ms:.2f}x | {total / (ms * 1e-3) / 1e12:.0f} | {floor_ms / ms:.0%} |")
    print(f"\nanchor = diffusers compiled (default SDPA) where compiled, else diffusers eager")
    print(f"relative L2 error ours vs diffusers (eager, bf16): {rel:.2e}")
    if not args.no_compile:
        print(f"relative L2 error ours compiled vs diffusers eager (bf16): {rel_c:.2e}")
        print(f"relative L2 error ours compiled, fused GELU vs diffusers eager (bf16): {rel_g:.2e}")
    for name, kinds in breakdowns.items():
        total_ms = sum(kinds.values())
        print(f"CUDA kernel time, {name}: {total_ms:.1f} ms = " + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
