"""The gateway's gRPC client and a tritonserver that goes away or hangs.

* A real tritonserver (a throwaway Python model) is killed, stays away long enough for gRPC's own reconnect
  backoff to grow to half a minute, and is restarted on the same ports (``TritonServer.restart``, as
  ``qwen3-tts-serve`` does); the engine, polled all along as /ready would be, must see it within a few
  seconds.
* A real tritonserver with the tiny CustomVoice model whose engine process is frozen (SIGSTOP) mid-stream:
  the stream ends with a 503 once nothing came for ``stall_s``, not after the request timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from qwen3_tts_gateway.backend import SynthesisRequest
from qwen3_tts_gateway.backend.triton import TritonEngine
from qwen3_tts_gateway.errors import EngineUnavailableError

from qwen3_tts_serving.launcher import build_model_repository
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


def _stub_of(server: TritonServer, model: str) -> int:
    """The pid of the Python backend process that runs ``model`` (a child of the server)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(parent) == server.pid and any(f"/{model}/1/".encode() in part for part in command):
            return int(entry.name)
    raise AssertionError(f"no stub process runs {model}")


def test_a_stream_whose_server_hangs_mid_way_ends_with_503_after_the_stall_limit(
    serving_settings: Settings, tmp_path: Path
) -> None:
    stall_s = 2.0
    repository = build_model_repository(serving_settings, tmp_path / "repo", ["custom_voice"])
    server = TritonServer(repository, serving_settings, log_path=tmp_path / "triton.log")
    request = SynthesisRequest("custom_voice", "A stream that will hang half way. " * 3, speaker="ryan")

    async def scenario() -> tuple[int, float]:
        engine = TritonEngine(server.grpc_url, timeout_s=120.0, stall_s=stall_s)
        frozen = _stub_of(server, "custom_voice_engine_0")
        chunks, stopped_at = 0, 0.0
        try:
            with pytest.raises(EngineUnavailableError, match="stopped mid-stream"):
                async for _ in engine.stream(request):
                    chunks += 1
                    if chunks == 1:
                        os.kill(frozen, signal.SIGSTOP)
                        stopped_at = time.monotonic()
        finally:
            os.kill(frozen, signal.SIGCONT)
            await engine.close()
        return chunks, time.monotonic() - stopped_at

    with server:
        chunks, ended_after_s = asyncio.run(scenario())
    assert chunks >= 1
    assert stall_s <= ended_after_s < stall_s + 10, ended_after_s
