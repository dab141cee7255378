"""Fixtures of the client tests.

* ``scripted``: a real local HTTP server answering scripted statuses/headers/bodies (servers.py).
* ``fast_retry``: a retry policy with millisecond backoff, so retry tests take milliseconds.
* ``gateway_server`` (e2e): the real gateway app under uvicorn on a free port, talking to the session's
  real ``triton_server`` (tests/conftest.py) over gRPC. Neither tests/conftest.py nor
  tests/gateway/conftest.py had a gateway *server* fixture when this was written, hence this one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qwen3_tts_client import RetryPolicy
from qwen3_tts_gateway.embedded import serve_in_thread

from .servers import ScriptedServer


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return RetryPolicy(max_retries=2, backoff_base=0.001, max_backoff=0.01, rng=random.Random(0))


@dataclass(frozen=True)
class GatewayServer:
    url: str
    settings: Any


def gateway_settings(grpc_url: str, cache_dir: Path, **overrides: Any) -> Any:
    from qwen3_tts_serving.settings import Settings

    host, port = grpc_url.rsplit(":", 1)
    values: dict[str, Any] = {
        "triton_host": host,
        "triton_grpc_port": int(port),
        "cache_dir": cache_dir,
        "voice_db_path": cache_dir / "voices.db",
        "api_keys": [],
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def gateway_server(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """The real gateway (``create_app()``) on a free port, in front of the real Triton."""
    from qwen3_tts_gateway import create_app

    settings = gateway_settings(triton_server.grpc_url, tmp_path_factory.mktemp("gateway"))
    with serve_in_thread(create_app(settings=settings)) as url:
        yield GatewayServer(url=url, settings=settings)
