"""Fixtures of the gateway tests: settings with a temporary voice library, the app with a fake engine
(routing/validation tests only, see fakes.py), reference clips encoded by soundfile, and a real
PostgreSQL server for the voice library (see postgres.py)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_gateway import create_app

from qwen3_tts_serving.settings import Settings

from .fakes import FakeEngine
from .postgres import PostgresCluster

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


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "cache_dir": tmp_path,
        "voice_db_path": tmp_path / "voices.db",
        "request_timeout_s": 5.0,
        "retry_after_s": 7,
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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A real PostgreSQL server on a free loopback port for the whole session; always stopped."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A new, empty database of that server: ``postgresql://voices@127.0.0.1:<port>/voices_<n>``."""
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def voice_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's voice library lives: a SQLite file, then (same test again) a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "voices.db"
    return request.getfixturevalue("postgres_url")
