"""The playground's routes, without a browser or Triton: what is served, with which types and headers, and
that the page stays self-contained (nothing loaded from another origin)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.routers.playground import STATIC_DIR

from qwen3_tts_serving.settings import Settings


def _client(tmp_path: Path, **overrides: Any) -> TestClient:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, cache_dir=tmp_path, voice_db_path=tmp_path / "voices.db", **overrides
    )
    # No request here reaches the engine; no lifespan runs either (no `with`), so nothing dials Triton.
    return TestClient(create_app(settings=settings, engine=cast(Any, object())))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return _client(tmp_path, api_keys=["secret"])


def test_page_and_assets_are_served_open_with_their_types(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/app.js">' in page.text
    expected = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
    for name, media_type in expected.items():
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media_type)
        assert response.headers["x-content-type-options"] == "nosniff"
    # Auth is on, yet the page loads without a key; the API behind it does not.
    assert client.get("/speakers").status_code == 401


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/..%2Fapp.py", "/static/%2e%2e", "/static/"])
def test_only_shipped_files_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404


def test_config_reflects_the_settings(tmp_path: Path) -> None:
    client = _client(tmp_path, max_text_length=50, min_ref_audio_seconds=2.5, api_keys=[])
    assert client.get("/playground/config").json() == {
        "auth_required": False,
        "max_text_length": 50,
        "min_ref_audio_seconds": 2.5,
        "max_ref_audio_seconds": 30.0,
        "max_upload_bytes": 20 * 1024 * 1024,
    }


def test_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/static/{name}", "/playground/config"} & set(paths)


def test_page_is_self_contained() -> None:
    """No CDN: every reference is same-origin and exists; no absolute URL in any shipped file."""
    html = (STATIC_DIR / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        if reference.startswith("/static/"):
            assert (STATIC_DIR / reference.removeprefix("/static/")).is_file(), reference
        else:
            assert reference in ("data:,", "/docs"), reference
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://", path.read_text()), path.name
