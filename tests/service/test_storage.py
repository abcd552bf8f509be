"""Both storage backends through the same calls: deterministic keys, atomic put, ranged reads,
per-job delete. S3 runs against moto's in-process S3 (skipped when boto3/moto are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Settings
from service.storage import LocalStorage, S3Storage, Storage, asset_key, open_storage


def exercise(storage: Storage) -> None:
    scratch = storage.workspace()
    (scratch / "video.mp4").write_bytes(bytes(range(256)) * 4)
    (scratch / "thumbnail.webp").write_bytes(b"RIFF....WEBP")
    storage.put(asset_key("video_a", "video"), scratch / "video.mp4")
    storage.put(asset_key("video_a", "thumbnail"), scratch / "thumbnail.webp")
    assert not (scratch / "video.mp4").exists()  # moved, not copied
    assert storage.size("video_a/video.mp4") == 1024 and storage.size("video_a/nothing") is None
    assert b"".join(storage.read("video_a/video.mp4", 10, 19)) == bytes(range(10, 20))
    assert b"".join(storage.read("video_a/video.mp4", 0, 1023)) == bytes(range(256)) * 4
    assert storage.list_keys("video_a") == ["video_a/thumbnail.webp", "video_a/video.mp4"]
    # A rerun of the same job overwrites its own key: still one video.
    (scratch / "again.mp4").write_bytes(b"second run")
    storage.put(asset_key("video_a", "video"), scratch / "again.mp4")
    assert storage.list_keys("video_a") == ["video_a/thumbnail.webp", "video_a/video.mp4"]
    assert storage.size("video_a/video.mp4") == len(b"second run")
    storage.delete_job("video_a")
    assert storage.list_keys("video_a") == [] and storage.size("video_a/video.mp4") is None


def test_local_storage(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "videos")
    exercise(storage)
    with pytest.raises(ValueError, match="escapes"):
        storage.size("../../etc/passwd")


def test_s3_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="spacetime-test")
        settings = Settings(embedded=True, storage="s3", s3_bucket="spacetime-test", data_dir=tmp_path / "videos")
        storage = open_storage(settings)
        assert isinstance(storage, S3Storage)
        exercise(storage)


def test_s3_without_a_bucket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SPACETIME_S3_BUCKET"):
        open_storage(Settings(embedded=True, storage="s3", data_dir=tmp_path))
