"""The gateway's gRPC client finds a restarted tritonserver soon after it is back, however long it was away.

A real tritonserver (a throwaway Python model) is killed, stays away long enough for gRPC's own reconnect
backoff to grow to half a minute, and is restarted on the same ports (``TritonServer.restart``, as
``qwen3-tts-serve`` does); the engine, polled all along as /ready would be, must see it within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from qwen3_tts_gateway.backend.triton import TritonEngine

from qwen3_tts_serving.launcher.triton import TritonServer
from qwen3_tts_serving.settings import Settings

pytestmark = pytest.mark.e2e

# gRPC's default backoff (1 s, x1.6 per try, +-20 %) reaches about 27 s by then: without a cap the next try
# comes some 10 to 30 s after the restarted server is ready.
OUTAGE_S = 45.0
RECONNECT_MAX_S = 1.0
POLL_S = 0.25


async def _poll_until(engine: TritonEngine, ready: bool, timeout_s: float) -> float:
    """Seconds until ``engine.ready()`` says ``ready``; polls like a load balancer's /ready probe."""
    started = time.monotonic()
    while await engine.ready() != ready:
        assert time.monotonic() - started < timeout_s, f"ready() was not {ready} within {timeout_s} s"
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started


def test_the_engine_reconnects_soon_after_a_long_outage(
    tmp_path: Path, write_python_model: Callable[..., Path]
) -> None:
    write_python_model(tmp_path / "repo" / "echo")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        cache_dir=tmp_path / "cache",
        triton_http_port=0,
        triton_grpc_port=0,
        triton_metrics_port=0,
        triton_startup_timeout_s=120.0,
    )
    server = TritonServer(tmp_path / "repo", settings, log_path=tmp_path / "triton.log")

    async def scenario() -> float:
        engine = TritonEngine(server.grpc_url, timeout_s=10.0, reconnect_max_s=RECONNECT_MAX_S)
        try:
            await _poll_until(engine, True, 30)
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
            await _poll_until(engine, False, 30)
            outage_end = time.monotonic() + OUTAGE_S
            while time.monotonic() < outage_end:  # the client keeps trying, and its backoff grows
                assert not await engine.ready()
                await asyncio.sleep(POLL_S)
            ports = server.ports
            await asyncio.to_thread(server.restart)  # returns once the server is ready
            assert server.ports == ports
            return await _poll_until(engine, True, 120)
        finally:
            await engine.close()

    with server:
        lag_s = asyncio.run(scenario())
    assert lag_s < 3 * RECONNECT_MAX_S + 1, f"the engine saw the server {lag_s:.1f} s after it was ready"
