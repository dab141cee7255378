"""Fixtures of the gateway tests: settings with a temporary voice library, the app with a fake engine
(routing/validation tests only, see fakes.py), reference clips encoded by soundfile, and the voice library
on SQLite and on the real PostgreSQL server of tests/conftest.py.

The helpers here (``clip``, ``make_settings``, ``gateway_settings``) are imported by the client and
end-to-end tests too (``from gateway.conftest import ...``)."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_gateway import create_app

from qwen3_tts_serving.settings import Settings

from .fakes import FakeEngine

# The models the gateway reports in /ready, written out (not read from the gateway) so that a model
# missing from the gateway's list fails the tests.
MODELS = [
    "custom_voice",
    "voice_design",
    "voice_clone",
    "voice_prompt",
    "custom_voice_session",
    "voice_clone_session",
]

SOUNDFILE_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
}


def tone(seconds: float, sample_rate: int = 24_000, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mono = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def encode(samples: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    container, subtype = SOUNDFILE_FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def clip(seconds: float = 4.0, fmt: str = "wav", sample_rate: int = 24_000, channels: int = 1) -> bytes:
    return encode(tone(seconds, sample_rate, channels), sample_rate, fmt)


def wait_until(condition: Callable[[], object], timeout_s: float = 5.0) -> bool:
    """Whether ``condition()`` became true within ``timeout_s`` (polled every 20 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "cache_dir": tmp_path,
        "voice_db_path": tmp_path / "voices.db",
        "request_timeout_s": 5.0,
        "retry_after_s": 7,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def gateway_settings(grpc_url: str, cache_dir: Path, **overrides: object) -> Settings:
    """Settings of a real gateway in front of the Triton at ``grpc_url`` (``host:port``), no API keys."""
    values: dict[str, object] = {
        "gateway_triton_url": grpc_url,
        "cache_dir": cache_dir,
        "voice_db_path": cache_dir / "voices.db",
        "api_keys": [],
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client_factory() -> Callable[..., httpx.AsyncClient]:
    def build(settings: Settings, engine: FakeEngine, **headers: str) -> httpx.AsyncClient:
        app = create_app(settings=settings, engine=engine)
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers, timeout=10)

    return build


@pytest.fixture
async def client(
    settings: Settings, engine: FakeEngine, client_factory: Callable[..., httpx.AsyncClient]
) -> AsyncIterator[httpx.AsyncClient]:
    async with client_factory(settings, engine) as http:
        yield http


@pytest.fixture(params=["sqlite", "postgresql"])
def voice_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's voice library lives: a SQLite file, then (same test again) a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "voices.db"
    return request.getfixturevalue("postgres_url")
