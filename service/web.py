"""The web page at `/`: plain HTML, JS modules and CSS from `service/static/`, no build step.

The gateway includes `router`; the page then talks to the same origin's `/v1` API. Files are
served from a fixed allow-list rather than a directory mount, so no request path ever reaches
the filesystem and nothing but these assets can be fetched.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).parent / "static"

# name -> media type; the page's whole surface
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "gallery.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page loads only its own scripts and styles and talks only to this origin; media may come
# as blob: URLs (fetched with an API key) as well as from the content routes.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

# no-cache: browsers revalidate (ETag / Last-Modified) so a redeploy shows at once
SECURITY_HEADERS: dict[str, str] = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])  # HEAD: uptime checkers probe the page that way
def index() -> FileResponse:
    """The page itself."""
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=headers)


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    """One of the page's scripts or its stylesheet; anything else is a 404."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no static file named {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)
