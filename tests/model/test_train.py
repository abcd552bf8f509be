"""`spacetime train` on the CPU with tiny shapes: both stages, export, resume, errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.data.buckets import Bucket
from model.data.latent_cache import LatentCache
from model.dit import DiTConfig
from model.pipeline import load_pipeline
from model.presets import get_preset
from model.train import (
    EMA, TrainConfig, add_arguments, binding_loss, binding_targets, config_from_args, learning_rate, progress, train,
)


def tiny_preset():
    p = get_preset("spacetime-tiny")
    return dataclasses.replace(
        p, dit=DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=32),
        text=dataclasses.replace(p.text, d_model=32, d_ff=48, num_layers=1, num_heads=2, d_kv=16),
        vae=dataclasses.replace(p.vae, base_dim=4), weights_dir=None)


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    base = dict(out=str(tmp_path / "run"), device="cpu", vae_steps=2, dit_steps=3, log_every=1,
                vae_voxels=2 * 5 * 32 * 32, dit_voxels=2 * 5 * 32 * 32, sizes=((32, 32), (32, 48)),
                vae_frames=5, dit_frames=(5,), cache_clips_per_bucket=3, cache_voxels=3 * 5 * 32 * 32,
                warmup_steps=1)
    return TrainConfig(**{**base, **overrides})


def test_both_stages_export_a_loadable_pipeline(tmp_path):
    lines: list[str] = []
    folder = train(tiny_config(tmp_path), log=lines.append, preset=tiny_preset())
    assert (folder / "model_index.json").exists()
    assert any(l.startswith("[vae] step 2 ") for l in lines) and any(l.startswith("[dit] step 3 loss") for l in lines)
    losses = [float(l.split(" loss ")[1].split()[0]) for l in lines if l.startswith("[dit] step")]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert len(list(folder.rglob("*.safetensors"))) == 3
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(folder / "transformer" / "model.safetensors")).values()} == {torch.float16}
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    assert vae_cfg["latents_std"] != [1.0] * 16 and min(vae_cfg["latents_std"]) > 0  # measured, not the preset's
    pipe = load_pipeline(folder, device="cpu")
    assert not pipe.is_random_weights
    frames = pipe(prompt="a red circle moving left", num_frames=5, height=32, width=48,
                  num_inference_steps=2, seed=0)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8


def test_resume_continues_from_the_checkpoint(tmp_path):
    preset = tiny_preset()
    train(tiny_config(tmp_path, stage="vae", vae_steps=2), log=lambda _: None, preset=preset)
    lines: list[str] = []
    train(tiny_config(tmp_path, stage="vae", vae_steps=4, resume=True), log=lines.append, preset=preset)
    assert any("resumed at step 2" in l for l in lines)
    assert any(l.startswith("[vae] done: 4 steps") for l in lines)
    assert not any(l.startswith("[vae] step 1 ") for l in lines)
    # The DiT stage alone picks up the trained VAE from the same output folder.
    lines = []
    train(tiny_config(tmp_path, stage="dit", dit_steps=1), log=lines.append, preset=preset)
    assert any(l.startswith("[dit] done: 1 steps") for l in lines)



def test_abs_pos_continues_trained_weights_and_is_exported(tmp_path):
    """`--abs-pos` with `--init`: the DiT gains the zero position table, trains it, and the
    exported folder records it (config and weights) and loads."""
    first = train(tiny_config(tmp_path / "a"), log=lambda _: None, preset=tiny_preset())
    assert not json.loads((first / "transformer" / "config.json").read_text()).get("abs_pos", False)
    lines: list[str] = []
    folder = train(tiny_config(tmp_path / "b", stage="dit", init=str(first), abs_pos=True, text_abs_pos=True,
                               dit_max_batch=1), log=lines.append, preset=tiny_preset())
    assert any(l.startswith("[dit] done: 3 steps") for l in lines)
    steps = [l for l in lines if l.startswith("[dit] step ")]
    assert steps and all(" batch 1 " in l for l in steps)  # --dit-max-batch caps what --dit-voxels allows
    assert json.loads((folder / "transformer" / "config.json").read_text())["abs_pos"] is True
    assert json.loads((folder / "text_encoder" / "spacetime_text.json").read_text())["abs_pos"] is True
    from safetensors.torch import load_file

    table = load_file(str(folder / "transformer" / "model.safetensors"))["pos_embedder.weight"]
    assert table.float().abs().sum() > 0  # trained away from its zero start
    words = load_file(str(folder / "text_encoder" / "positions.safetensors"))["pos_embedding"]
    assert words.float().abs().sum() > 0
    pipe = load_pipeline(folder, device="cpu")
    assert pipe.transformer.pos_embedder is not None
    assert torch.equal(pipe.text_encoder.pos_embedding.detach().float(), words.float())
    assert pipe(prompt="a red circle", num_frames=5, height=32, width=32, num_inference_steps=2, seed=0).shape == (5, 32, 32, 3)

def test_binding_targets_name_each_word_s_own_object():
    """Every colour, shape and motion key word of a varied caption is paired with the object it
    names (the k-th of each kind goes with the k-th object, whatever the template, synonyms or
    style padding)."""
    from model.data.captions import COLOUR_WORDS, MOTION_KEY_WORDS, SHAPE_WORDS, random_caption
    from model.data.shapes import COLOURS, MOTIONS, SHAPES, ObjectSpec, sample_scene
    from model.text_encoder import word_tokenizer

    tok, rng = word_tokenizer(), np.random.default_rng(0)
    scenes = [sample_scene(rng, "train", 1 + i % 2) for i in range(200)]
    captions = [random_caption(s, rng, noise=0.5) for s in scenes]
    ids = tok(captions, padding="max_length", max_length=32, truncation=True, return_tensors="pt")["input_ids"]
    rows = binding_targets(tok, ids, scenes)
    assert rows.shape == (3 * sum(len(s.objects) for s in scenes), 7)  # no caption skipped
    for b, pos, k, n, colour, shape, motion in rows.tolist():
        assert n == len(scenes[b].objects) and 0 <= k < n
        word = tok.convert_ids_to_tokens(int(ids[b, pos]))
        assert (word in COLOUR_WORDS[COLOURS[colour]] or word in SHAPE_WORDS[SHAPES[shape]]
                or word in MOTION_KEY_WORDS[MOTIONS[motion]]), (captions[b], word)
        assert scenes[b].objects[k] == ObjectSpec(SHAPES[shape], COLOURS[colour], MOTIONS[motion])
    pairs = [sample_scene(np.random.default_rng(s), "train", 2) for s in range(2)]
    short = tok(["", "a red circle"], padding="max_length", max_length=32, return_tensors="pt")["input_ids"]
    assert len(binding_targets(tok, short, pairs)) == 0  # dropped caption; words that miss the scene's count


def test_binding_loss_falls_only_when_states_carry_the_object():
    """The loss is low for states that hold each word's object and stays near chance for a bag of
    words (both objects' attributes at every word)."""
    from model.data.shapes import COLOURS, MOTIONS, SHAPES

    torch.manual_seed(0)
    n, d = 512, 15
    targets = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long), torch.randint(2, (n,)),
                           torch.full((n,), 2), torch.randint(7, (n,)), torch.randint(3, (n,)), torch.randint(5, (n,))], dim=1)
    other = torch.stack([torch.randint(7, (n,)), torch.randint(3, (n,)), torch.randint(5, (n,))], dim=1)

    def one_hot(t):
        return torch.cat([F.one_hot(t[:, 0], 7), F.one_hot(t[:, 1], 3), F.one_hot(t[:, 2], 5)], 1).float()

    bound = one_hot(targets[:, 4:])[:, None] * 4            # (n, 1, d): the word's own object
    bag = (one_hot(targets[:, 4:]) + one_hot(other))[:, None] * 4  # both objects, unordered
    losses = {}
    for name, states in (("bound", bound), ("bag", bag)):
        head = torch.nn.Linear(d, len(COLOURS) + len(SHAPES) + len(MOTIONS))
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            loss = binding_loss(head, states, targets)
            loss.backward()
            opt.step()
        losses[name] = float(loss.detach())
    assert losses["bound"] < 0.05 and losses["bag"] > 0.3, losses
    assert float(binding_loss(head, bag, targets[:0])) == 0.0
    # "slot": the object index is readable when the state holds it (and only from pairs' rows).
    slot_states = F.one_hot(targets[:, 2], 2).float()[:, None] * 4
    head = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = binding_loss(head, slot_states, targets, "slot")
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05
    singles = targets.clone()
    singles[:, 3] = 1
    assert float(binding_loss(head, slot_states, singles, "slot")) == 0.0


def test_bind_loss_trains_and_is_not_exported(tmp_path):
    first = train(tiny_config(tmp_path / "a"), log=lambda _: None, preset=tiny_preset())
    lines: list[str] = []
    folder = train(tiny_config(tmp_path / "b", stage="dit", init=str(first), bind_loss=0.5, pair_share=1.0),
                   log=lines.append, preset=tiny_preset())
    binds = [float(l.split("(bind ")[1].split(")")[0]) for l in lines if l.startswith("[dit] step ")]
    assert len(binds) == 3 and all(math.isfinite(b) and b > 0 for b in binds)
    from safetensors.torch import load_file

    for part in ("transformer", "text_encoder"):
        for f in (folder / part).glob("*.safetensors"):
            assert not any("binding" in k for k in load_file(str(f)))
    lines = []
    train(tiny_config(tmp_path / "d", stage="dit", init=str(first), bind_loss=0.5, bind_target="slot", pair_share=1.0),
          log=lines.append, preset=tiny_preset())
    assert len([l for l in lines if "(bind " in l]) == 3
    with pytest.raises(ValueError, match="--bind-target must be"):
        train(tiny_config(tmp_path / "e", stage="dit", init=str(first), bind_loss=0.5, bind_target="colour"),
              log=lambda _: None, preset=tiny_preset())
    with pytest.raises(ValueError, match="--bind-loss needs"):
        train(tiny_config(tmp_path / "c", stage="dit", init=str(first), bind_loss=0.5, data=str(tmp_path)),
              log=lambda _: None, preset=tiny_preset())


def test_dit_stage_needs_a_vae(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs a trained VAE"):
        train(tiny_config(tmp_path, stage="dit"), log=lambda _: None, preset=tiny_preset())
    with pytest.raises(ValueError, match="--stage"):
        train(tiny_config(tmp_path, stage="both"), log=lambda _: None, preset=tiny_preset())
    with pytest.raises(ValueError, match="--vae-steps or --vae-time-s"):
        train(tiny_config(tmp_path, vae_steps=0), log=lambda _: None, preset=tiny_preset())


def test_schedule_and_ema():
    assert learning_rate(1.0, 0, 0.0, warmup=10) == pytest.approx(0.1)
    assert learning_rate(1.0, 100, 0.0, warmup=10) == pytest.approx(1.0)
    assert learning_rate(1.0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert progress(5, 0.0, 10, 0.0) == 0.5 and progress(1, 30.0, 10, 60.0) == 0.5
    layer = torch.nn.Linear(2, 2)
    ema = EMA(layer, decay=0.5)
    before = ema.shadow[0].clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update(layer, step=1000)
    assert torch.allclose(ema.shadow[0], before + 0.5)


def test_cli_arguments_and_errors():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--vae-steps", "5", "--sizes", "160x96", "--dit-frames", "9", "17"]))
    assert cfg.vae_steps == 5 and cfg.sizes == ((96, 160),) and cfg.dit_frames == (9, 17)
    with pytest.raises(ValueError, match="4k\\+1"):
        config_from_args(parser.parse_args(["--dit-frames", "10"]))
    with pytest.raises(ValueError, match="multiples of 16"):
        config_from_args(parser.parse_args(["--sizes", "100x64"]))
    cfg = config_from_args(parser.parse_args(["--pair-share", "0.7", "--caption-noise", "0.2", "--abs-pos",
                                              "--text-abs-pos", "--dit-max-batch", "1024", "--text-abs-pos-init", "0.5",
                                              "--bind-loss", "0.1"]))
    assert (cfg.pair_share, cfg.caption_noise, cfg.abs_pos, cfg.text_abs_pos) == (0.7, 0.2, True, True)
    assert cfg.dit_max_batch == 1024 and cfg.text_abs_pos_init == 0.5 and cfg.bind_loss == 0.1
    with pytest.raises(ValueError, match="--pair-share must be between 0 and 1"):
        config_from_args(parser.parse_args(["--pair-share", "1.5"]))
    with pytest.raises(ValueError, match="--caption-noise must be between 0 and 1"):
        config_from_args(parser.parse_args(["--caption-noise", "-0.1"]))


def test_latent_cache_redraws_captions_per_use():
    cache = LatentCache()
    buckets = [Bucket(5, 32, 32), Bucket(5, 32, 48)]
    encode = lambda v: torch.nn.functional.avg_pool3d(v, (1, 8, 8))  # noqa: E731 (B, 3, T, H/8, W/8)
    cache.fill(encode, buckets, clips_per_bucket=4, time_s=60, voxels_per_call=2 * 5 * 32 * 32, seed=0, device="cpu")
    assert len(cache) >= 8 and all(len(cache.scenes[b]) >= 4 for b in buckets)
    rng = np.random.default_rng(0)
    batch = cache.sample(2 * 5 * 32 * 32, rng)
    assert batch.video.dtype == torch.float32 and batch.video.shape[1:3] == (3, 5)
    captions = {c for _ in range(30) for c in cache.sample(2 * 5 * 32 * 32, rng).captions}
    assert len(captions) > len(cache)  # the same clips come back with different words


def test_latent_cache_draws_buckets_by_clips_or_evenly():
    """A time-limited fill holds more short clips than long ones; `uniform` draws every bucket alike."""
    cache = LatentCache()
    short, long = Bucket(5, 32, 32), Bucket(17, 32, 32)
    encode = lambda v: torch.nn.functional.avg_pool3d(v, (1, 8, 8))  # noqa: E731
    # time_s=0: one round-robin pass, as when the time runs out long before clips_per_bucket
    cache.fill(encode, [short, long], clips_per_bucket=1000, time_s=0, voxels_per_call=4 * 17 * 32 * 32, seed=0, device="cpu")
    assert (len(cache.scenes[short]), len(cache.scenes[long])) == (13, 4)  # clips per call: equal voxels
    voxels = 17 * 32 * 32  # one long clip or three short ones per batch

    def share_short(uniform: bool) -> float:
        rng = np.random.default_rng(0)
        frames = [cache.sample(voxels, rng, uniform=uniform).video.shape[2] for _ in range(400)]
        return sum(f == 5 for f in frames) / len(frames)

    expected = len(cache.scenes[short]) / len(cache)
    assert abs(share_short(False) - expected) < 0.07
    assert abs(share_short(True) - 0.5) < 0.07


def test_bucket_draw_option_is_checked():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])).bucket_draw == "cached"
    assert config_from_args(parser.parse_args(["--bucket-draw", "uniform"])).bucket_draw == "uniform"
    with pytest.raises(ValueError, match="--bucket-draw must be"):
        config_from_args(parser.parse_args(["--bucket-draw", "long"]))


def test_trains_on_a_video_folder(tmp_path):
    import av

    clips = tmp_path / "clips"
    clips.mkdir()
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        with av.open(str(clips / f"{name}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
            for t in range(8):
                img = np.zeros((32, 48, 3), np.uint8)
                img[:, t * 4: t * 4 + 8] = colour
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        (clips / f"{name}.txt").write_text(f"a {name} bar moving right")
    lines: list[str] = []
    folder = train(tiny_config(tmp_path, data=str(clips), vae_steps=1, dit_steps=2), log=lines.append,
                   preset=tiny_preset())
    assert any(l.startswith("[dit] done: 2 steps") for l in lines)
    assert (folder / "transformer" / "model.safetensors").exists()


def test_init_vae_trains_a_fresh_dit_on_another_runs_vae(tmp_path):
    """Phase A of the two-GPU recipe: a fresh DiT + text encoder on a VAE exported by another run."""
    from safetensors.torch import load_file

    preset = tiny_preset()
    vae_run = train(tiny_config(tmp_path / "a", stage="vae"), log=lambda _: None, preset=preset)
    lines: list[str] = []
    folder = train(tiny_config(tmp_path / "b", stage="dit", dit_steps=1, init_vae=str(vae_run)),
                   log=lines.append, preset=preset)
    assert any(l.startswith("[dit] done: 1 steps") for l in lines)
    before, after = (load_file(str(f / "vae" / "diffusion_pytorch_model.safetensors")) for f in (vae_run, folder))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((folder / "vae" / "config.json").read_text())["latents_std"] == \
        json.loads((vae_run / "vae" / "config.json").read_text())["latents_std"]
