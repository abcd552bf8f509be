"""What the gateway refuses to be: torch-importing, open off loopback, or run on placeholder secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.catalog import Catalog
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_import_service_main_leaves_torch_out() -> None:
    code = "import sys, service.main, service.serve; print('torch' in sys.modules, 'model' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_placeholder_secrets_are_refused_outside_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPACETIME_KEY_PEPPER", "SPACETIME_WEBHOOK_SECRET", "SPACETIME_EMBEDDED", "SPACETIME_AUTH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="SPACETIME_KEY_PEPPER, SPACETIME_WEBHOOK_SECRET"):
        Settings()
    with pytest.raises(ValueError, match="only allowed in embedded mode"):
        Settings(key_pepper="a" * 20, webhook_secret="b" * 20, auth="open")
    assert Settings(embedded=True, auth="open").auth == "open"


def test_serve_refuses_open_access_off_loopback() -> None:
    env = {"SPACETIME_EMBEDDED": "1", "SPACETIME_AUTH": "open", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "workers.cli", "serve", "--host", "0.0.0.0"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "needs API keys" in out.stderr


def test_models_file_adds_models_and_bad_files_say_why(tmp_path: Path) -> None:
    good = tmp_path / "models.json"
    good.write_text(json.dumps([{"name": "wan", "source": "/models/wan", "sizes": ["832x480"], "seconds": ["2"],
                                 "fps": 16, "default_steps": 50, "default_guidance": 5.0}]))
    catalog = Catalog.load(good)
    assert catalog.names() == ["spacetime-tiny", "wan"]
    assert catalog.get("wan").queue == "video.wan" and catalog.get("wan").num_frames("2") == 33
    assert catalog.get("spacetime-tiny").num_frames("4") == 33
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="cannot read models file"):
        Catalog.load(bad)
    bad.write_text(json.dumps([{"name": "x", "source": "x", "sizes": ["big"], "seconds": ["1"], "fps": 8,
                                "default_steps": 1, "default_guidance": 1.0}]))
    with pytest.raises(ValueError, match="is not WxH"):
        Catalog.load(bad)
    assert catalog.get("wan").qualities == ["exact", "fast"]  # both unless the file says otherwise
    for qualities in (["fast"], ["exact", "turbo"], ["exact", "exact"], []):
        bad.write_text(json.dumps([{"name": "x", "source": "x", "sizes": ["64x64"], "seconds": ["1"], "fps": 8,
                                    "default_steps": 1, "default_guidance": 1.0, "qualities": qualities}]))
        with pytest.raises(ValueError, match="qualities must list 'exact'"):
            Catalog.load(bad)
