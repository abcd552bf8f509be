"""`spacetime generate`: writes an MP4 that decodes back to the requested frame count and size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_PRESET

from model.pipeline import TextToVideoPipeline
from workers.cli import main
from workers.media import decode_mp4


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "tiny"
    TextToVideoPipeline.from_preset(TINY_PRESET).save_pretrained(folder)
    return folder


def test_generate_in_process_writes_the_requested_clip(pipeline_folder, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "a red ball moving left", "-o", str(out), "--model", str(pipeline_folder),
               "--seconds", "1", "--fps", "8", "--size", "64x32", "--steps", "2", "--seed", "4",
               "--guidance", "3", "--negative-prompt", "blurry"])
    assert rc == 0
    frames, fps = decode_mp4(out)
    assert frames.shape == (9, 32, 64, 3) and fps == 8
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "denoising" in captured.err
    assert "random weights" not in captured.err


def test_generate_refuses_bad_arguments_plainly(pipeline_folder, tmp_path, capsys):
    common = ["-o", str(tmp_path / "x.mp4"), "--model", str(pipeline_folder), "--steps", "1"]
    assert main(["generate", "a ball", "--size", "100x96", *common]) == 2
    assert "width must be a positive multiple of 16" in capsys.readouterr().err
    assert main(["generate", "a ball", "--size", "96x100", *common]) == 2
    assert "height must be a positive multiple of 16" in capsys.readouterr().err
    assert main(["generate", "a ball", "--seconds", "0.3", *common]) == 2  # 3.4 frames -> 3 frames: not 4k+1
    assert "num_frames must be 4k+1" in capsys.readouterr().err
    assert main(["generate", "a ball", "--threads", "0", *common]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["generate", "a ball", "--model", "no-such-model", "-o", str(tmp_path / "y.mp4")]) == 2
    assert "unknown preset 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "a ball", "--size", "big"])
    assert not (tmp_path / "x.mp4").exists()


def test_generate_as_a_real_process_says_when_weights_are_random(tmp_path):
    exe = Path(sys.prefix) / "bin" / "spacetime"
    assert exe.exists(), "install the project into the venv (make / pip install -e .)"
    out = tmp_path / "tiny.mp4"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    weights = Path(__file__).resolve().parents[2] / "model" / "weights" / "spacetime-tiny" / "model_index.json"
    proc = subprocess.run(
        [str(exe), "generate", "a red ball moving left", "-o", str(out), "--seconds", "1", "--size", "32x32",
         "--steps", "2", "--seed", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    frames, fps = decode_mp4(out)
    assert frames.shape == (9, 32, 32, 3) and fps == 8
    assert ("random weights: output will not follow the prompt" in proc.stderr) == (not weights.exists())


def test_generate_quality_fast_reaches_the_pipeline(tmp_path, capsys):
    from conftest import perturb_zero_init

    pipe = TextToVideoPipeline.from_preset(TINY_PRESET)
    perturb_zero_init(pipe.transformer)  # a fresh model predicts zero whatever the guidance
    pipeline_folder = pipe.save_pretrained(tmp_path / "perturbed")
    clips = {}
    for quality in ("exact", "fast"):
        out = tmp_path / f"{quality}.mp4"
        assert main(["generate", "a red ball", "-o", str(out), "--model", str(pipeline_folder), "--seconds", "1",
                     "--size", "64x32", "--steps", "4", "--seed", "4", "--guidance", "3", "--quality", quality]) == 0
        clips[quality] = decode_mp4(out)[0]
    assert clips["fast"].shape == clips["exact"].shape == (9, 32, 64, 3)
    assert (clips["fast"] != clips["exact"]).any()  # step 4 of 4 ran without guidance in fast mode
    with pytest.raises(SystemExit) as exited:  # argparse refuses it before any work
        main(["generate", "a ball", "-o", str(tmp_path / "x.mp4"), "--quality", "turbo"])
    assert exited.value.code == 2 and "invalid choice: 'turbo'" in capsys.readouterr().err


def test_generate_remixes_a_clip_keeping_its_shape_and_refuses_what_it_cannot(pipeline_folder, tmp_path, capsys):
    source = tmp_path / "source.mp4"
    common = ["--model", str(pipeline_folder), "--steps", "4", "--seed", "1"]
    assert main(["generate", "a red ball", "-o", str(source), "--seconds", "1", "--fps", "8", "--size", "64x32",
                 *common]) == 0
    remix = tmp_path / "remix.mp4"
    assert main(["generate", "a green ball", "-o", str(remix), "--remix", str(source), "--strength", "0.5", *common]) == 0
    frames, fps = decode_mp4(remix)
    assert frames.shape == decode_mp4(source)[0].shape == (9, 32, 64, 3) and fps == 8
    captured = capsys.readouterr()
    assert "denoising" in captured.err and "/2 " in captured.err  # round(0.5 x 4) = 2 steps run

    assert main(["generate", "x", "-o", str(tmp_path / "a.mp4"), "--remix", str(tmp_path / "missing.mp4"), *common]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["generate", "x", "-o", str(tmp_path / "b.mp4"), "--remix", str(source), "--size", "64x32", *common]) == 2
    assert "keeps the clip's length and size" in capsys.readouterr().err
    assert main(["generate", "x", "-o", str(tmp_path / "c.mp4"), "--remix", str(source), "--strength", "1.5", *common]) == 2
    assert r"strength must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "c.mp4").exists()
