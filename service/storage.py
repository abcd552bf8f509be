"""Where videos live: a local folder by default, any S3-compatible bucket optionally.

Keys are deterministic per job (`<job_id>/video.mp4`, `thumbnail.webp`, `spritesheet.jpg`,
`metadata.json`), so a redelivered job overwrites its own files and can never leave a second
video under another name. Writers produce files in `workspace()` and `put` moves them in
atomically (a rename locally, a single PUT on S3).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from service.config import Settings

ASSETS: dict[str, tuple[str, str]] = {  # variant -> (file name, media type)
    "video": ("video.mp4", "video/mp4"),
    "thumbnail": ("thumbnail.webp", "image/webp"),
    "spritesheet": ("spritesheet.jpg", "image/jpeg"),
    "metadata": ("metadata.json", "application/json"),
    "provenance": ("provenance.json", "application/json"),  # `spacetime verify`'s record of the MP4
}


def asset_key(job_id: str, variant: str) -> str:
    return f"{job_id}/{ASSETS[variant][0]}"


class Storage(Protocol):
    def workspace(self) -> Path: ...
    def put(self, key: str, src: Path) -> None: ...
    def size(self, key: str) -> int | None: ...
    def read(self, key: str, start: int, end: int) -> Iterator[bytes]: ...
    def delete_job(self, job_id: str) -> None: ...
    def list_keys(self, job_id: str) -> list[str]: ...


class LocalStorage:
    chunk_bytes = 256 * 1024

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"storage key escapes the root: {key!r}")
        return path

    def workspace(self) -> Path:
        # Inside the root so `put` is a same-filesystem rename.
        scratch = self.root / ".tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=scratch))

    def put(self, key: str, src: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end inclusive."""
        with open(self._path(key), "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(self.chunk_bytes, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self._path(job_id), ignore_errors=True)

    def list_keys(self, job_id: str) -> list[str]:
        folder = self._path(job_id)
        if not folder.is_dir():
            return []
        return sorted(f"{job_id}/{p.name}" for p in folder.iterdir() if p.is_file())


class S3Storage:
    """S3-compatible bucket through boto3 (installed separately: `pip install boto3`)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, scratch: Path) -> None:
        import boto3  # optional dependency, only for this backend

        self.client = boto3.client("s3", endpoint_url=endpoint_url or None)
        self.bucket, self.prefix = bucket, prefix
        self.scratch = Path(scratch)

    def workspace(self) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.scratch))

    def put(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, self.prefix + key)
        Path(src).unlink(missing_ok=True)

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)["ContentLength"])
        except self.client.exceptions.ClientError:
            return None

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes={start}-{end}")["Body"]
        yield from body.iter_chunks(256 * 1024)

    def list_keys(self, job_id: str) -> list[str]:
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}{job_id}/")
        return sorted(obj["Key"][len(self.prefix):] for obj in found.get("Contents", []))

    def delete_job(self, job_id: str) -> None:
        keys = self.list_keys(job_id)
        if keys:
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": self.prefix + k} for k in keys]}
            )


def open_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        if not settings.s3_bucket:
            raise ValueError("SPACETIME_STORAGE=s3 needs SPACETIME_S3_BUCKET")
        return S3Storage(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.data_dir / ".tmp")
    return LocalStorage(settings.data_dir)
