"""HTTP Range requests on stored files (RFC 9110 section 14), so browsers can seek in an MP4."""

from __future__ import annotations

from service.errors import ApiError


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A `Range` header -> inclusive (start, end), or None for the whole file.

    Supports one range: `bytes=a-b`, `bytes=a-`, `bytes=-n`. A multi-range request gets its
    first range (allowed: a server may answer with less). Unsatisfiable -> 416.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None  # unknown units are ignored, as the RFC says
    first = spec.split(",")[0].strip()
    start_s, dash, end_s = first.partition("-")
    unsatisfiable = ApiError(
        416, f"Range {header!r} cannot be satisfied for a file of {size} bytes.",
        code="range_not_satisfiable", headers={"Content-Range": f"bytes */{size}"},
    )
    try:
        if not dash:
            raise ValueError
        if start_s == "":  # suffix: the last n bytes
            length = int(end_s)
            if length <= 0:
                raise unsatisfiable
            return max(0, size - length), size - 1
        start = int(start_s)
        end = int(end_s) if end_s else size - 1
    except ValueError:
        return None  # a malformed header is ignored: send the whole file
    if start < 0 or start >= size or end < start:
        raise unsatisfiable
    return start, min(end, size - 1)
