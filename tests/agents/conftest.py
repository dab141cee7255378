"""Fixtures of the voice-agent tests: the real gateway (``create_app()`` under uvicorn on a free port) in
front of the session's real ``triton_server`` (tests/conftest.py), reached over real sockets.

``agent_gateway`` uses a long idle timeout; ``idle_gateway`` a short one (the gateway's own websocket idle
timeout, from ``Settings.session_idle_timeout_s``). Both share the one Triton.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

IDLE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Gateway:
    url: str
    app: Any
    settings: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(app: Any, startup_timeout_s: float = 30.0) -> Iterator[str]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="agents-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def gateway_settings(grpc_url: str, cache_dir: Path, **overrides: Any) -> Any:
    from qwen3_tts_serving.settings import Settings

    values: dict[str, Any] = {
        "gateway_triton_url": grpc_url,
        "cache_dir": cache_dir,
        "voice_db_path": cache_dir / "voices.db",
        "api_keys": [],
        "request_timeout_s": 600.0,
        "session_idle_timeout_s": 120.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_gateway(triton_server: Any, cache_dir: Path, **overrides: Any) -> Iterator[Gateway]:
    from qwen3_tts_gateway import create_app

    settings = gateway_settings(triton_server.grpc_url, cache_dir, **overrides)
    app = create_app(settings=settings)
    with serve(app) as url:
        yield Gateway(url, app, settings)


@pytest.fixture(scope="session")
def agent_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(triton_server, tmp_path_factory.mktemp("agents")) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def idle_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cache_dir = tmp_path_factory.mktemp("agents-idle")
    with running_gateway(triton_server, cache_dir, session_idle_timeout_s=IDLE_TIMEOUT_S) as gateway:
        yield gateway
