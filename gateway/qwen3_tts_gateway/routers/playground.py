"""The browser playground: ``/`` (the page), ``/static/<file>`` (its script and style) and
``/playground/config`` (the limits the page checks before it sends anything).

Open like ``/health``: the page holds no data; it calls the API with the key the user types in.
Only the files shipped in ``static/`` are served, looked up by name (a request never becomes a path).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from ..deps import SettingsDep
from ..errors import NotFoundError

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Explicit types: the OS mimetypes table may call .js "text/plain", which browsers refuse for modules.
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_FILES = {
    path.name: path
    for path in (STATIC_DIR.iterdir() if STATIC_DIR.is_dir() else ())
    if path.is_file() and path.suffix in _MEDIA_TYPES
}
# Same-origin only: no CDN, no inline script; blob: for the download links and the recorded clip.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Revalidate every load, so a redeployed gateway never runs a stale script against a newer API.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _file(name: str) -> FileResponse:
    path = _FILES.get(name)
    if path is None:
        raise NotFoundError("no such file", param="path")
    headers = {**_HEADERS, "Content-Security-Policy": _CSP} if path.suffix == ".html" else _HEADERS
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=headers)


@router.get("/")
async def index() -> FileResponse:
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    return _file(name)


@router.get("/playground/config")
async def config(settings: SettingsDep) -> JSONResponse:
    """What the page needs to warn early; the server still enforces every limit itself."""
    return JSONResponse(
        {
            "auth_required": bool(settings.api_keys),
            "max_text_length": settings.max_text_length,
            "min_ref_audio_seconds": settings.min_ref_audio_seconds,
            "max_ref_audio_seconds": settings.max_ref_audio_seconds,
            "max_upload_bytes": settings.max_upload_bytes,
        },
        headers={"Cache-Control": "no-cache"},
    )
