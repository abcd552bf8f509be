"""Remix end to end: the real gateway, a real Celery worker running the trained tiny pipeline, a
real Redis. The worker reads the source's stored MP4, encodes it and re-runs the last `strength`
of the schedule with the new prompt."""

from __future__ import annotations

import importlib
import json

import pytest

from model.data.detector import detect_objects
from service.config import get_settings
from service.storage import LocalStorage
from tests.conftest import Stack, wait_status
from workers.media import decode_mp4


def download(client, video_id: str, path) -> object:
    path.write_bytes(client.get(f"/v1/videos/{video_id}/content").content)
    frames, _ = decode_mp4(path)
    return frames


def test_a_remix_recolours_the_video_and_keeps_where_its_object_moves(stack: Stack, tmp_path) -> None:
    with stack.client() as c:
        source = c.post("/v1/videos", json={"prompt": "a red circle moving left", "seconds": "2", "size": "128x128",
                                            "seed": 4}).json()
        wait_status(c, source["id"], ("completed",))
        remix = c.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a green circle moving left", "seed": 5}).json()
        done = wait_status(c, remix["id"], ("completed",))
        assert done["remixed_from_video_id"] == source["id"] and done["progress"] == 100
        assert (done["seconds"], done["size"], done["seed"]) == ("2", "128x128", 5)

        was = detect_objects(download(c, source["id"], tmp_path / "source.mp4"))[0]
        frames = download(c, remix["id"], tmp_path / "remix.mp4")
        now = detect_objects(frames)[0]
        assert frames.shape == (17, 128, 128, 3)
        assert (was.colour, was.shape, was.motion) == ("red", "circle", "left")
        assert (now.colour, now.shape, now.motion) == ("green", "circle", "left")
        assert abs(now.mean_x - was.mean_x) < 0.05, (now.mean_x, was.mean_x)

        meta = json.loads((stack.data_dir / remix["id"] / "metadata.json").read_text())
        assert meta["remixed_from_video_id"] == source["id"] and float(meta["strength"]) == done["strength"]

        # The signed manifest names the source (with its own manifest) as the parent ingredient.
        made = c.get(f"/v1/videos/{remix['id']}/provenance").json()
        assert made["state"] in ("valid", "trusted") and made["manifest"]["actions"] == ["c2pa.opened", "c2pa.edited"]
        source_manifest = c.get(f"/v1/videos/{source['id']}/provenance").json()["manifest"]["label"]
        assert made["manifest"]["ingredients"] == [
            {"title": f"{source['id']}.mp4", "relationship": "parentOf", "manifest": source_manifest}]
        assert made["manifest"]["generation"]["remixed_from_video_id"] == source["id"]


def test_a_remix_whose_source_is_deleted_before_it_runs_fails_clearly(stack: Stack) -> None:
    with stack.client() as c:
        source = c.post("/v1/videos", json={"prompt": "a red circle", "seconds": "1", "size": "128x128",
                                            "num_inference_steps": 2}).json()
        wait_status(c, source["id"], ("completed",))
        # Keep the one worker busy so the remix waits in the queue while its source is deleted.
        blocker = c.post("/v1/videos", json={"prompt": "a blue square", "seconds": "4", "size": "128x128",
                                             "num_inference_steps": 100}).json()
        wait_status(c, blocker["id"], ("in_progress",), min_progress=1)
        remix = c.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a green circle"}).json()
        assert remix["status"] == "queued"
        assert c.delete(f"/v1/videos/{source['id']}").status_code == 200
        c.post(f"/v1/videos/{blocker['id']}/cancel")
        failed = wait_status(c, remix["id"], ("failed",))
        assert failed["error"]["code"] == "remix_unavailable"
        assert "deleted or expired" in failed["error"]["message"] and source["id"] in failed["error"]["message"]


def test_remix_source_reads_plain_jobs_as_none_and_refuses_a_pipeline_that_cannot_remix(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACETIME_EMBEDDED", "true")  # workers.tasks builds its Celery app from the settings at import
    get_settings.cache_clear()
    try:
        tasks = importlib.import_module("workers.tasks")
        storage = LocalStorage(tmp_path)
        assert tasks.remix_source(storage, object(), {"model": "m", "prompt": "p"}) is None
        with pytest.raises(tasks.RemixUnavailable, match="cannot remix"):
            tasks.remix_source(storage, object(), {"model": "m", "remixed_from_video_id": "video_abc"})
    finally:
        get_settings.cache_clear()
