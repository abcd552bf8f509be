import numpy as np
import pytest
from PIL import Image

from workers.media import decode_mp4, encode_mp4, write_spritesheet, write_thumbnail


def _clip(t=9, h=96, w=160):
    rng = np.random.default_rng(0)
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):  # a bright square moving right over a dark background
        frames[i, 30:60, 10 + 8 * i : 40 + 8 * i] = (220, 40, 40)
    return frames + rng.integers(0, 8, frames.shape, dtype=np.uint8)


def test_mp4_round_trip_keeps_frames_size_and_fps(tmp_path):
    frames = _clip()
    path = encode_mp4(frames, tmp_path / "v.mp4", fps=8, metadata={"comment": "spacetime test"})
    decoded, fps = decode_mp4(path)
    assert decoded.shape == frames.shape
    assert fps == pytest.approx(8.0)
    # H.264 at crf 18 is lossy but close
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
    assert not list(tmp_path.glob(".v.*")), "temporary file left behind"


def test_mp4_is_faststart(tmp_path):
    path = encode_mp4(_clip(), tmp_path / "v.mp4", fps=8)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "moov atom must precede mdat for streaming"


def test_bad_frames_are_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "v.mp4", fps=8)
    with pytest.raises(ValueError, match="even sides"):
        encode_mp4(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "v.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def test_thumbnail_and_spritesheet(tmp_path):
    frames = _clip(t=17)
    thumb = Image.open(write_thumbnail(frames, tmp_path / "t.webp"))
    assert thumb.size == (160, 96)
    sheet = Image.open(write_spritesheet(frames, tmp_path / "s.jpg", columns=8))
    assert sheet.size == (8 * 160, 3 * 96)  # 17 tiles -> 3 rows of 8
