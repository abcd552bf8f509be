"""A whole video, prompt to frames: our pipeline against diffusers' WanPipeline with the same components.

    python bench/gpu_pipeline.py                       # wan2.1-1.3b dims, 81 frames 480x832, 50 steps, CFG 5
    python bench/gpu_pipeline.py --steps 10            # a quicker look (times scale with steps)
    python bench/gpu_pipeline.py --tiny --device cpu   # tiny dims, seconds: checks the script end to end

One process, one device. The components are built once with random weights (no downloads) at the
preset's dimensions and saved as a diffusers WanPipeline folder: the Wan transformer, the Wan2.1 VAE
(diffusers' defaults), a UMT5 encoder with Wan's output width but `--text-layers` layers (UMT5-XXL's
24 layers and 256k vocabulary would only add its ~50 ms encode and 11 GB of weights) and a byte
tokenizer. diffusers loads that folder as a `WanPipeline`; we load the same folder through
`load_pipeline` (the transformer converted onto our VideoDiT). Both keep the VAE in float32 and the
rest in bf16 (float32 on the CPU).

Rows: diffusers eager (the anchor), diffusers with its transformer blocks compiled, ours exact eager,
ours exact compiled (regional), the same with the guided pair as two batch-1 forwards per step
(`split_guidance`, as diffusers runs it) instead of one batch-2 forward, ours fast compiled
(`mode="fast"` with its defaults: guidance window, step cache, forecast steps; model/step_cache.py),
the same without forecast steps (the fast mode of sessions 4-6) and with a forecast every 3rd
step instead of the default's every 5th (at 50 steps), and ours fast compiled with FP8 linears
(`fp8=True`, model/fp8.py; its blocks are compiled again for the FP8 path).
Exact-mode levers, each ours exact compiled with one change: `ours-gelu` the MLPs' bias + GELU in
the up-projection's cuBLASLt epilogue (`VideoDiT.enable_fused_gelu`; CUDA half precision only, so
on the CPU this row runs the unfused MLP and draws the exact row's frames), `ours-vae-bf16` the
VAE cast to bf16 for the decode, `ours-tuned` both plus `torch.backends.cudnn.benchmark = True`
(cuDNN picks its convolution algorithms by timing them at the warm-up call). Every row sets the
whole state it runs with; after the last row the VAE is float32 again, the fused GELU off and
cudnn.benchmark as it was.
`--only ours-compiled,ours-forecast3` runs a subset (the anchor always runs).
Each is timed as one whole call (text encode, 50 guided steps, VAE decode) after a 2-step warm-up
call, with the peak memory allocated during the call. PSNR compares frames with ours exact eager
(same seed); with random weights it says whether two runs draw the same video, not how good it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.fast_mode import psnr  # noqa: E402 (uint8 frames against uint8 frames)
from model.presets import get_preset  # noqa: E402
from model.step_cache import FastSampling  # noqa: E402

ROW_KEYS = ("diffusers-compiled", "ours-eager", "ours-compiled", "ours-gelu", "ours-vae-bf16", "ours-tuned",
            "ours-split", "ours-fast", "ours-fast-no-forecast", "ours-forecast3", "ours-fp8")
PROMPT = "a red fox running through snow, cinematic"
NEGATIVE = "blurry, low quality"


def build_folder(folder: Path, preset: str, tiny: bool, text_layers: int, device: str) -> dict:
    """Random diffusers Wan components at the preset's dims, saved as a WanPipeline folder."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    p = get_preset(preset)
    if tiny:
        dit = dict(num_attention_heads=2, attention_head_dim=16, text_dim=32, ffn_dim=64, num_layers=2, freq_dim=32)
        text = UMT5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                          feed_forward_proj="gated-gelu", dropout_rate=0.0)
        vae_kw = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
        shift, shape = 3.0, dict(num_frames=9, height=48, width=80)
    else:
        c = p.dit
        dit = dict(num_attention_heads=c.num_heads, attention_head_dim=c.dim // c.num_heads, text_dim=c.text_dim,
                   ffn_dim=c.ffn_dim, num_layers=c.num_layers, freq_dim=c.freq_dim)
        text = UMT5Config(vocab_size=384, d_model=c.text_dim, d_kv=64, d_ff=10240, num_layers=text_layers,
                          num_heads=64, feed_forward_proj="gated-gelu", dropout_rate=0.0)
        vae_kw = {}
        d = p.defaults
        shift, shape = d.shift, dict(num_frames=d.num_frames, height=d.height, width=d.width)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):  # initialise on the GPU: a 1.4B-parameter CPU init takes minutes
        transformer = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=16, out_channels=16, cross_attn_norm=True,
                                            qk_norm="rms_norm_across_heads", eps=1e-6, **dit).to(dtype)
        encoder = UMT5EncoderModel(text).to(dtype)
        vae = AutoencoderKLWan(**vae_kw)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    WanPipeline(tokenizer=ByT5Tokenizer(), text_encoder=encoder, vae=vae, transformer=transformer,
                scheduler=scheduler).save_pretrained(str(folder))
    del transformer, encoder, vae
    return shape


def timed_call(fn, device: str) -> tuple[np.ndarray, float, float]:
    """(frames uint8 (T, H, W, 3), seconds, peak GB allocated during the call)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    frames = fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    return frames, seconds, peak


def compile_diffusers_blocks(transformer: torch.nn.Module) -> None:
    """Regional compilation, as ours does it: each transformer block compiled in place."""
    for block in transformer.blocks:
        block.compile()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="wan2.1-1.3b")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="tiny dims, 9 frames 48x80 (script check)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's 50; tiny: 3)")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows (default with --tiny)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--static-compile", action="store_true",
                        help="compile our blocks with dynamic=False (one static graph per batch size and shape)")
    parser.add_argument("--only", default="", help="comma-separated rows besides the anchor (default all): "
                        + ", ".join(ROW_KEYS))
    args = parser.parse_args()
    only = {key.strip() for key in args.only.split(",") if key.strip()}
    if only - set(ROW_KEYS):
        parser.error(f"unknown rows {sorted(only - set(ROW_KEYS))}; choose from {', '.join(ROW_KEYS)}")
    wanted = lambda key: not only or key in only  # noqa: E731
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu (with --tiny)")
        return 2
    steps = args.steps or (3 if args.tiny else get_preset(args.preset).defaults.num_inference_steps)
    compile_rows = not (args.no_compile or args.tiny)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32

    import diffusers
    from diffusers import WanPipeline

    from model.pipeline import load_pipeline

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="spacetime-bench-") as tmp:
        folder = Path(tmp) / "wan"
        shape = build_folder(folder, args.preset, args.tiny, args.text_layers, args.device)

        # diffusers' WanPipeline: two transformer calls per step (prompt, then negative prompt).
        pipe = WanPipeline.from_pretrained(str(folder), torch_dtype=dtype)
        pipe.vae.to(torch.float32)
        pipe.to(args.device)
        pipe.set_progress_bar_config(disable=True)

        def diffusers_call(n: int) -> np.ndarray:
            out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=n, guidance_scale=args.guidance,
                       generator=torch.Generator(args.device).manual_seed(0), output_type="np", **shape).frames[0]
            return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

        variants = [("diffusers WanPipeline, eager (anchor)", None)]
        if compile_rows and wanted("diffusers-compiled"):
            variants.append(("diffusers WanPipeline, blocks compiled", lambda: compile_diffusers_blocks(pipe.transformer)))
        diffusers_frames = {}
        for name, prepare in variants:
            if prepare is not None:
                prepare()
            diffusers_call(2)  # warm-up (and compile)
            frames, seconds, peak = timed_call(lambda: diffusers_call(steps), args.device)
            diffusers_frames[name] = frames
            rows.append(dict(run=name, seconds=seconds, peak_gb=peak, frames=frames))
            print(f"{name}: {seconds:.2f} s, peak {peak:.1f} GB", flush=True)
        del pipe
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()

        # Ours, from the same folder: one batched forward per step for the guided pair.
        ours = load_pipeline(folder, device=args.device, dtype=dtype)

        def ours_call(n: int, mode: str) -> np.ndarray:
            return ours(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=n, guidance_scale=args.guidance,
                        seed=0, mode=mode, fps=16, **shape)

        compiled = [False]
        cudnn_benchmark = torch.backends.cudnn.benchmark

        def setup(compile: bool, split: bool = False, fused_gelu: bool = False, vae_dtype: torch.dtype = torch.float32,
                  tuned: bool = False, **fast):
            """Each row sets the whole state it runs with (compiling is one-way: compiled rows come last)."""
            def prepare() -> None:
                if compile and not compiled[0]:
                    ours.compile_transformer(dynamic=False if args.static_compile else None)
                    compiled[0] = True
                ours.split_guidance = split
                ours.fast_sampling = dataclasses.replace(FastSampling(), **fast)
                ours.transformer.enable_fused_gelu(fused_gelu)  # a guard of the compiled blocks: one graph per value
                ours.vae.to(vae_dtype)
                torch.backends.cudnn.benchmark = tuned or cudnn_benchmark
            return prepare

        kind = "compiled" if compile_rows else "eager"
        c = compile_rows
        variants = [("ours exact, eager", "exact", setup(False), "ours-eager")]
        if compile_rows:
            variants.append(("ours exact, compiled", "exact", setup(True), "ours-compiled"))
        variants += [  # the exact levers before the split row, whose batch-1 calls recompile the blocks
            (f"ours exact, {kind}, fused GELU", "exact", setup(c, fused_gelu=True), "ours-gelu"),
            (f"ours exact, {kind}, VAE bf16", "exact", setup(c, vae_dtype=torch.bfloat16), "ours-vae-bf16"),
            (f"ours exact, {kind}, GELU+VAE bf16+cudnn", "exact",
             setup(c, fused_gelu=True, vae_dtype=torch.bfloat16, tuned=True), "ours-tuned"),
            (f"ours exact, {kind}, pair as 2 calls", "exact", setup(c, split=True), "ours-split"),
            (f"ours fast, {kind}", "fast", setup(c), "ours-fast"),
            (f"ours fast, no forecasts, {kind}", "fast", setup(c, forecast_every=1), "ours-fast-no-forecast"),
            (f"ours fast, forecast every 3, {kind}", "fast", setup(c, forecast_every=3), "ours-forecast3"),
            (f"ours fast + FP8, {kind}", "fast", setup(c, fp8=True), "ours-fp8"),
        ]
        variants = [(name, mode, prepare) for name, mode, prepare, key in variants if wanted(key)]
        for name, mode, prepare in variants:
            if prepare is not None:
                prepare()
            ours_call(2, mode)
            frames, seconds, peak = timed_call(lambda: ours_call(steps, mode), args.device)
            rows.append(dict(run=name, seconds=seconds, peak_gb=peak, frames=frames, stats=dict(ours.last_stats)))
            print(f"{name}: {seconds:.2f} s, peak {peak:.1f} GB, {ours.last_stats}", flush=True)
        setup(False)()  # the defaults again: float32 VAE, unfused GELU, cudnn.benchmark as it was

    anchor = rows[0]["seconds"]
    reference_row = next((r for r in rows if r["run"].startswith("ours exact")), rows[0])
    reference = reference_row["frames"]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    print(f"\n{device_name}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{'tiny dims' if args.tiny else args.preset}, {shape['num_frames']} frames {shape['height']}x{shape['width']}, "
          f"{steps} steps, guidance {args.guidance}, random weights"
          + (", our blocks compiled static (dynamic=False)" if args.static_compile else ""))
    print(f"PSNR against: {reference_row['run']}")
    print(f"{'run':42} {'s / video':>10} {'vs anchor':>10} {'peak GB':>8} {'PSNR vs ours exact':>19} {'forwards':>9}"
          f" {'forecast':>9}")
    for r in rows:
        r["speedup"] = anchor / r["seconds"]
        r["psnr_vs_ours_exact"] = psnr(r["frames"], reference)
        forwards = r.get("stats", {}).get("forwards", "")
        forecast = r.get("stats", {}).get("forecast_steps", "")
        print(f"{r['run']:42} {r['seconds']:>10.2f} {r['speedup']:>9.2f}x {r['peak_gb']:>8.1f} "
              f"{r['psnr_vs_ours_exact']:>19.1f} {forwards:>9} {forecast:>9}")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "frames"} for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
