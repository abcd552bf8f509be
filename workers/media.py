"""Frames to files: H.264 MP4 (yuv420p, +faststart), a thumbnail and a spritesheet.

Every writer goes through a temporary file in the destination's folder and an atomic rename,
so a reader never sees a half-written video.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image


def _temp_beside(dest: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    return Path(name)


def encode_mp4(frames: np.ndarray, dest: str | Path, fps: int, metadata: dict[str, str] | None = None) -> Path:
    """Write uint8 frames (T, H, W, 3) as H.264 yuv420p with the moov atom first (+faststart)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even sides, got {width}x{height}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(dest, ".mp4")
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            for key, value in (metadata or {}).items():
                container.metadata[key] = value
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def decode_mp4(path: str | Path) -> tuple[np.ndarray, float]:
    """Read an MP4 back: uint8 frames (T, H, W, 3) and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
    return np.stack(frames), fps


def _save_image(image: Image.Image, dest: Path, fmt: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(dest, f".{fmt.lower()}")
    try:
        image.save(tmp, format=fmt)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def write_thumbnail(frames: np.ndarray, dest: str | Path) -> Path:
    """The middle frame as a WebP still."""
    return _save_image(Image.fromarray(frames[len(frames) // 2]), Path(dest), "WEBP")


def write_spritesheet(frames: np.ndarray, dest: str | Path, columns: int = 8, max_tiles: int = 32) -> Path:
    """Up to `max_tiles` evenly spaced frames tiled row-major, `columns` wide, as a JPEG (for scrubbing)."""
    count = min(len(frames), max_tiles)
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    _, height, width, _ = frames.shape
    cols = min(columns, count)
    rows = -(-count // cols)
    sheet = np.zeros((rows * height, cols * width, 3), dtype=np.uint8)
    for i, index in enumerate(picks):
        r, c = divmod(i, cols)
        sheet[r * height : (r + 1) * height, c * width : (c + 1) * width] = frames[index]
    return _save_image(Image.fromarray(sheet), Path(dest), "JPEG")
