"""The embedded Triton launcher starting a real tritonserver: streaming through it, stopping it whatever
happens in its block, and failing fast and clearly (a model that fails to load, ports taken, not ready in
time). The launcher's unit tests are in tests/unit/test_launcher.py."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from unit.launcher_helpers import _group_gone, _settings

from qwen3_tts_serving.launcher import triton
from qwen3_tts_serving.launcher.process import StartupError, free_ports
from qwen3_tts_serving.launcher.triton import TritonServer


def _stream(grpc_url: str, model: str) -> list[tuple[int | None, bool]]:
    """(sequence, final flag) of every response to one request on a gRPC stream."""
    import tritonclient.grpc as grpcclient

    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    text = grpcclient.InferInput("text", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"hello"]], dtype=object))
    client.async_stream_infer(model, [text], enable_empty_final_response=True)
    seen: list[tuple[int | None, bool]] = []
    try:
        while not seen or not seen[-1][1]:
            result, error = responses.get(timeout=20)
            assert error is None, error
            final = result.get_response().parameters["triton_final_response"].bool_param
            sequence = result.as_numpy("sequence")
            seen.append((None if sequence is None else int(sequence.ravel()[0]), final))
    finally:
        client.stop_stream()
        client.close()
    return seen


@pytest.mark.e2e
def test_real_server_streams_and_is_stopped_even_when_the_block_raises(
    tmp_path: Path, write_python_model: Callable[..., Path]
) -> None:
    # Importing the project inside the stub proves PYTHONPATH carries src/ and the venv.
    write_python_model(tmp_path / "repo" / "echo", initialize="import qwen3_tts_serving.settings")
    server = TritonServer(tmp_path / "repo", _settings(tmp_path), log_path=tmp_path / "triton.log")
    with pytest.raises(KeyError, match="on purpose"), server:
        assert httpx.get(f"{server.http_url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{server.http_url}/v2/models/echo/ready").status_code == 200
        assert httpx.get(server.metrics_url).status_code == 200
        assert _stream(server.grpc_url, "echo") == [(0, False), (1, False), (2, False), (None, True)]
        pid = server.pid
        raise KeyError("on purpose")
    assert pid is not None
    assert not server.is_running
    assert _group_gone(pid)  # the server and its Python stubs
    assert "Started GRPCInferenceService" in server.log_path.read_text()


@pytest.mark.e2e
def test_model_that_fails_to_initialize_raises_with_the_server_log(
    tmp_path: Path, write_python_model: Callable[..., Path]
) -> None:
    write_python_model(tmp_path / "repo" / "broken", initialize="raise RuntimeError('initialize blew up')")
    server = TritonServer(tmp_path / "repo", _settings(tmp_path), log_path=tmp_path / "triton.log")
    started = time.monotonic()
    with pytest.raises(StartupError, match="initialize blew up") as info:
        server.start()
    assert time.monotonic() - started < 30  # noticed at the server's exit, not at the timeout
    assert str(tmp_path / "triton.log") in str(info.value)
    assert server.pid is not None
    assert not server.is_running
    assert _group_gone(server.pid)


@pytest.mark.e2e
def test_a_picked_port_taken_meanwhile_is_picked_again(
    tmp_path: Path, write_python_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_python_model(tmp_path / "repo" / "echo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = [[taken.getsockname()[1], *free_ports(2)]]
        monkeypatch.setattr(
            triton, "free_ports", lambda count, host: picks.pop() if picks else free_ports(count)
        )
        with TritonServer(tmp_path / "repo", _settings(tmp_path), log_path=tmp_path / "triton.log") as server:
            assert server.ports is not None
            assert server.ports.http != taken.getsockname()[1]
            assert httpx.get(f"{server.http_url}/v2/health/ready").status_code == 200
    assert "already in use" in server.log_path.read_text()


@pytest.mark.e2e
def test_a_fixed_port_in_use_fails_at_once(tmp_path: Path, write_python_model: Callable[..., Path]) -> None:
    write_python_model(tmp_path / "repo" / "echo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = _settings(tmp_path, triton_grpc_port=taken.getsockname()[1])
        server = TritonServer(tmp_path / "repo", settings, log_path=tmp_path / "triton.log")
        with pytest.raises(StartupError, match="already in use"):
            server.start()
    assert server.log_path.read_text().count("failed to start GRPC service") == 1  # no retries


@pytest.mark.e2e
def test_server_not_ready_in_time_is_stopped(tmp_path: Path, write_python_model: Callable[..., Path]) -> None:
    write_python_model(tmp_path / "repo" / "sleepy", initialize="import time; time.sleep(120)")
    settings = _settings(tmp_path, triton_startup_timeout_s=2.0)
    server = TritonServer(tmp_path / "repo", settings, log_path=tmp_path / "triton.log", stop_timeout_s=3.0)
    with pytest.raises(StartupError, match="not ready after 2 s"):
        server.start()
    assert server.pid is not None
    assert not server.is_running
    assert _group_gone(server.pid)
