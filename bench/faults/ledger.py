"""What the fault scripts submit, and the audit that counts lost jobs and duplicate outputs.

A job is LOST when the gateway accepted it (200 on create) and afterwards it is missing, never
reaches a final status within the deadline, or is `completed` without a decodable MP4. A failure
with a clear error code is not lost: the client was told. DUPLICATE OUTPUTS are video files
beyond one per completed job: a second MP4 in a job's folder, an MP4 in a folder of no accepted
job, or more than one "generation completed" log line for the same job across all workers.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.faults.stack import ComposeStack, log_events

FINAL = ("completed", "failed")
# The cheapest real job: 9 frames of 128x128, one denoising step, no classifier-free guidance.
TINY_JOB = {"prompt": "a red circle moving left", "seconds": "1", "size": "128x128",
            "num_inference_steps": 1, "guidance_scale": 1.0}


def api(stack: ComposeStack, key: str | None = None, timeout_s: float = 10) -> httpx.Client:
    key = key or stack.create_key()
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)


def submit(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/videos", json={**TINY_JOB, **overrides})
    if response.status_code != 200:
        raise RuntimeError(f"create answered {response.status_code}: {response.text[:300]}")
    return response.json()


def get_video(client: httpx.Client, video_id: str) -> dict[str, Any] | None:
    """The video object, or None while the gateway cannot answer (restarting, Redis down)."""
    try:
        response = client.get(f"/v1/videos/{video_id}")
    except httpx.HTTPError:
        return None
    if response.status_code == 200:
        return response.json()
    if response.status_code in (502, 503):
        return None
    raise RuntimeError(f"GET {video_id} answered {response.status_code}: {response.text[:300]}")


def wait_for(client: httpx.Client, video_id: str, statuses: tuple[str, ...], timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    video: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        video = get_video(client, video_id) or video
        if video and video["status"] in statuses:
            return video
        if video and video["status"] in FINAL:
            return video  # final but not what was hoped for: the caller decides
        time.sleep(0.1)
    raise TimeoutError(f"{video_id} not {statuses} within {timeout_s} s (last: {video and video['status']})")


def decode_mp4(data: bytes) -> tuple[int, int, int]:
    """(frames, width_px, height_px) of an MP4, by decoding every frame with PyAV."""
    import av

    with av.open(io.BytesIO(data)) as container:
        frames = [f for f in container.decode(video=0)]
    if not frames:
        raise ValueError("no frames")
    return len(frames), frames[0].width, frames[0].height


@dataclass
class Audit:
    fault: str
    trials: int = 0
    accepted: int = 0
    completed: int = 0
    failed_cleanly: int = 0
    lost: int = 0
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)

    def row(self) -> str:
        extra = ", ".join(f"{k} {v:g}" for k, v in self.measures.items())
        return (f"| {self.fault} | {self.trials} | {self.accepted} | {self.completed} | {self.failed_cleanly} | "
                f"{self.lost} | {self.duplicates} | {extra} |")

    @staticmethod
    def header() -> str:
        return ("| fault | trials | jobs accepted | completed | failed with a clear error | jobs lost | "
                "duplicate outputs | measured |\n|---|---|---|---|---|---|---|---|")

    def report(self) -> int:
        """Print the table (header, row, notes); the exit status: 0 only if nothing was lost,
        duplicated or noted as a failure."""
        print(self.header())
        print(self.row())
        for note in self.notes:
            print("  -", note)
        return 0 if self.lost == 0 and self.duplicates == 0 and "FAIL" not in " ".join(self.notes) else 1


@dataclass
class Ledger:
    """Every job a fault script got accepted, and what it may end as."""

    stack: ComposeStack
    client: httpx.Client
    jobs: dict[str, set[str]] = field(default_factory=dict)  # id -> acceptable final outcomes

    def submit(self, allowed: frozenset[str] | set[str] = frozenset({"completed"}), **overrides: Any) -> dict[str, Any]:
        video = submit(self.client, **overrides)
        self.jobs[video["id"]] = set(allowed)
        return video

    def audit(self, audit: Audit, ids: list[str] | None = None, timeout_s: float = 180,
              expect: tuple[int, int, int] = (9, 128, 128)) -> Audit:
        """Wait for `ids` (default: all) to finish, then count outcomes, lost jobs and duplicates."""
        for video_id in ids if ids is not None else list(self.jobs):
            allowed = self.jobs[video_id]
            audit.accepted += 1
            try:
                video = wait_for(self.client, video_id, FINAL, timeout_s)
            except TimeoutError as exc:
                audit.lost += 1
                audit.notes.append(str(exc))
                continue
            if video["status"] == "completed":
                content = self.client.get(f"/v1/videos/{video_id}/content")
                try:
                    decoded = decode_mp4(content.content) if content.status_code == 200 else None
                except Exception as exc:  # a corrupt file served is the worst outcome
                    decoded = None
                    audit.notes.append(f"{video_id}: undecodable content: {exc}")
                if decoded != expect:
                    audit.lost += 1
                    audit.notes.append(f"{video_id}: completed but content {content.status_code} decodes to "
                                       f"{decoded} (frames, width, height), expected {expect}")
                    continue
                audit.completed += 1
            else:
                audit.failed_cleanly += 1
                audit.notes.append(f"{video_id}: failed {video['error']['code']}: {video['error']['message'][:120]}")
            if video["status"] not in allowed:
                audit.notes.append(f"FAIL: {video_id} ended {video['status']}, expected {sorted(allowed)}")
        audit.duplicates = self.duplicates()
        return audit

    def duplicates(self) -> int:
        """Extra MP4s in storage plus repeated completions in the workers' logs."""
        root = Path(self.stack.host_path("/videos"))
        extra = 0
        for mp4 in root.rglob("*.mp4"):
            rel = mp4.relative_to(root).parts
            if rel[0] == ".tmp":
                continue  # a workspace of a job still running (checked empty at the end by the scripts)
            if rel[0] not in self.jobs or rel[1:] != ("video.mp4",):
                extra += 1
        completions = Counter(e.get("job_id") for w in self.stack.workers for e in log_events(w.text(), "generation completed"))
        extra += sum(n - 1 for n in completions.values() if n > 1)
        return extra
