"""Range header parsing for the MP4 download."""

from __future__ import annotations

import pytest

from service.errors import ApiError
from service.ranges import parse_range


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)), ("bytes=-10", (990, 999)),
    ("bytes=900-5000", (900, 999)), ("bytes=0-1, 5-6", (0, 1)), ("items=0-1", None), ("bytes=a-b", None),
])
def test_ranges(header, expected) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-4", "bytes=-0"])
def test_unsatisfiable_ranges_are_416(header) -> None:
    with pytest.raises(ApiError) as info:
        parse_range(header, 1000)
    assert info.value.status_code == 416 and info.value.headers["Content-Range"] == "bytes */1000"
