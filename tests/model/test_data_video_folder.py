"""The video-folder dataset: both caption layouts, bucket fitting and clear errors."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from model.data.video_folder import VideoFolderDataset, choose_bucket, decode_clip, find_clips


def write_mp4(path, num_frames=20, height=72, width=120, fps=16):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(num_frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[:, : (t * 5) % width] = (200, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_txt_layout_decodes_resamples_and_fits_bucket(tmp_path):
    write_mp4(tmp_path / "a.mp4", num_frames=40, fps=16)   # 2.5 s -> 20 frames at 8 fps
    (tmp_path / "a.txt").write_text("a red wipe\n")
    frames = decode_clip(tmp_path / "a.mp4", fps=8)
    assert frames.shape[1:] == (72, 120, 3) and 19 <= len(frames) <= 21
    ds = VideoFolderDataset(tmp_path, fps=8, max_frames=33)
    clip, caption = ds[0]
    assert caption == "a red wipe"
    assert clip.shape == (3, 17, 96, 160)                   # widest bucket, 4k+1 frames
    assert -1.0 <= float(clip.min()) and float(clip.max()) <= 1.0
    batch = next(ds.batches(batch_size=4))
    assert batch.video.shape == (1, 3, 17, 96, 160) and batch.captions == ["a red wipe"]


def test_jsonl_layout(tmp_path):
    (tmp_path / "clips").mkdir()
    write_mp4(tmp_path / "clips" / "x.mp4", height=128, width=64, fps=8)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"video": "clips/x.mp4", "caption": "tall"}) + "\n")
    records = find_clips(tmp_path)
    assert [r.caption for r in records] == ["tall"]
    clip, _ = VideoFolderDataset(tmp_path, max_frames=9)[0]
    assert clip.shape == (3, 9, 160, 96)                    # tall clip -> tall bucket


def test_choose_bucket_rounds_frames_down_to_4k_plus_1():
    assert choose_bucket(100, 100, 100, max_frames=33).num_frames == 33
    assert choose_bucket(12, 100, 100, max_frames=33).num_frames == 9
    assert (choose_bucket(3, 100, 100, 33).num_frames, choose_bucket(3, 100, 100, 33).height) == (1, 128)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_clips(tmp_path / "missing")
    with pytest.raises(ValueError, match="no captioned"):
        find_clips(tmp_path)
    write_mp4(tmp_path / "b.mp4")
    with pytest.raises(FileNotFoundError, match="no caption file b.txt"):
        find_clips(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"video": "nope.mp4", "caption": "x"}\n')
    with pytest.raises(FileNotFoundError, match="nope.mp4 does not exist"):
        find_clips(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"caption": "x"}\n')
    with pytest.raises(ValueError, match="captions.jsonl:1"):
        find_clips(tmp_path)
