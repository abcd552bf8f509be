"""The page's routes without a browser: what `/` and `/static/...` serve, and what they refuse."""

from __future__ import annotations

import subprocess
import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service import web


def client() -> TestClient:
    app = FastAPI()
    app.include_router(web.router)
    return TestClient(app)


def test_index_is_the_page_with_a_strict_csp() -> None:
    resp = client().get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert '<textarea id="prompt"' in resp.text
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    head = client().head("/")
    assert head.status_code == 200 and head.content == b""


def test_every_asset_the_page_references_is_served_with_its_type() -> None:
    c = client()
    page = c.get("/").text
    for name, media_type in web.ASSETS.items():
        resp = c.get(f"/static/{name}")
        assert resp.status_code == 200, name
        assert resp.headers["content-type"] == media_type
        assert resp.content == (web.STATIC_DIR / name).read_bytes()
    # index.html names app.js and style.css; app.js imports the other modules
    assert "/static/app.js" in page and "/static/style.css" in page
    app_js = c.get("/static/app.js").text
    assert './api.js"' in app_js and './gallery.js"' in app_js


def test_only_listed_assets_are_served() -> None:
    c = client()
    for path in ("/static/index.html", "/static/..%2Fweb.py", "/static/missing.js", "/static/"):
        assert c.get(path).status_code == 404, path
    assert c.get("/static/../web.py").status_code == 404


def test_every_static_file_is_listed() -> None:
    on_disk = {p.name for p in web.STATIC_DIR.iterdir() if p.is_file()} - {"index.html"}
    assert on_disk == set(web.ASSETS)


def test_web_module_stays_torch_free() -> None:
    code = "import sys, service.web; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
