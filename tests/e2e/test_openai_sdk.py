"""The official openai SDK against the running stack (gateway + worker processes, real Redis)."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from tests.conftest import Stack
from workers.media import decode_mp4

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its videos API deprecated


def test_create_and_poll_download_remix_and_delete(stack: Stack, tmp_path) -> None:
    client = OpenAI(base_url=f"{stack.url}/v1", api_key=stack.key("sdk"), max_retries=0)
    video = client.videos.create_and_poll(
        model="spacetime-tiny", prompt="a green square moving right", seconds="1", size="160x96",
        extra_body={"num_inference_steps": 3, "seed": 11, "negative_prompt": "blur"},
    )
    assert video.status == "completed" and video.progress == 100 and video.error is None
    assert (video.model, video.seconds, video.size) == ("spacetime-tiny", "1", "160x96")
    extra = video.model_extra or {}
    assert extra["seed"] == 11 and extra["num_inference_steps"] == 3 and extra["negative_prompt"] == "blur"

    client.videos.download_content(video.id).write_to_file(tmp_path / "clip.mp4")
    frames, fps = decode_mp4(tmp_path / "clip.mp4")
    assert frames.shape == (9, 96, 160, 3) and fps == 8

    thumb = client.videos.download_content(video.id, variant="thumbnail").read()
    assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"

    assert client.videos.retrieve(video.id).id == video.id
    remix = client.videos.remix(video.id, prompt="a blue square moving right", extra_body={"strength": 0.5})
    assert remix.remixed_from_video_id == video.id and (remix.model_extra or {})["strength"] == 0.5
    remix = client.videos.poll(remix.id)
    assert remix.status == "completed" and (remix.seconds, remix.size) == ("1", "160x96")
    page = client.videos.list(limit=10)
    assert [v.id for v in page.data] == [remix.id, video.id]
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_sdk_errors_map_to_the_sdk_exceptions(stack: Stack) -> None:
    client = OpenAI(base_url=f"{stack.url}/v1", api_key=stack.key("sdk"), max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(model="spacetime-tiny", prompt="x", size="1280x720")
    assert bad.value.code == "invalid_value" and bad.value.param == "size"
    assert "128x128" in bad.value.message
    anonymous = OpenAI(base_url=f"{stack.url}/v1", api_key="sk-st-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.videos.list()
