"""A tritonserver stopped (SIGTERM) while a stream or a voice-agent session outlives its drain: the client
gets the retryable "shutting down" error when the drain ends, not a bare "stream removed" when the server
is killed at its exit timeout, and the server then exits cleanly (status 0) well before its exit timeout.

Triton 2.51 closes its endpoints on SIGTERM and calls a model's finalize() only once nothing is in flight:
the models see the stop themselves (server_watch) and drain then.

A client that keeps its gRPC stream open after its last FINAL (tritonclient's ``start_stream``) keeps the
model it called loaded: Triton 2.51 closes its listeners on SIGTERM but not the streams already open, and
the stream holds its model. So these clients close their stream once they have their answer, as ours do.

Sessions are plain inputs (``session_id``), not Triton's sequence batcher: a sequence counted as in flight
until its END or its idle timeout, and a stopping server refuses the END a model sends itself, so one
session left open held the server for its whole exit timeout (status 1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen3_tts_serving import contract, server_watch
from qwen3_tts_serving.launcher import TritonServer

from .conftest import own_server, own_server_settings
from .test_triton_models import StreamingCalls, _open_session

pytestmark = pytest.mark.e2e

DRAIN_S = 2.0
LONG_TEXT = " ".join(["A stream that goes on well past the drain of the server it runs on."] * 20)


@pytest.fixture
def server(tiny_checkpoints: Path, tmp_path: Path) -> Iterator[TritonServer]:
    settings = own_server_settings(tmp_path, tiny_checkpoints, triton_drain_timeout_s=DRAIN_S)
    with own_server(settings, tmp_path, ["custom_voice", contract.CUSTOM_VOICE_SESSION]) as started:
        yield started


@pytest.fixture
def calls(server: TritonServer) -> Iterator[StreamingCalls]:
    streaming = StreamingCalls(server.grpc_url)
    yield streaming
    streaming.close()  # again, when the test got that far: closing twice is harmless


def _first_audio(calls: StreamingCalls, request_id: str) -> None:
    deadline = time.monotonic() + 120
    while not calls.results[request_id].chunks:
        assert time.monotonic() < deadline and not calls.errors, calls.errors
        calls._record(*calls.events.get(timeout=120))


def _stop(server: TritonServer, calls: StreamingCalls) -> tuple[float, float, int | None]:
    """SIGTERM the server, close the client's stream once every request has ended; seconds until then,
    seconds until the server exited, and its exit code."""
    time.sleep(3 * server_watch.POLL_S)  # the models see the server up at their next look
    exit_codes: list[int | None] = []
    stopper = threading.Thread(target=lambda: exit_codes.append(server.stop()))  # SIGTERM, waits for exit
    sigterm_at = time.monotonic()
    stopper.start()
    try:
        calls.wait(timeout=DRAIN_S + 30)
    finally:
        ended_after_s = time.monotonic() - sigterm_at
        calls.close()
    stopper.join(timeout=server.settings.triton_exit_timeout_s + 30)
    return ended_after_s, time.monotonic() - sigterm_at, exit_codes[0] if exit_codes else None


def _retryable_shutdown(errors: list[str]) -> bool:
    # The front and the engine word it alike (contract.SHUTTING_DOWN), whichever ended it first.
    return (
        len(errors) == 1
        and contract.SHUTTING_DOWN in errors[0]
        and contract.classify_error(errors[0]) is contract.ErrorKind.UNAVAILABLE
    )


def test_a_stream_that_outlives_the_drain_gets_the_retry_error_when_the_drain_ends(server, calls):
    calls.send("custom_voice", "long", text=LONG_TEXT, speaker="ryan", max_new_tokens=4000)
    _first_audio(calls, "long")
    ended_after_s, stopped_after_s, exit_code = _stop(server, calls)
    assert _retryable_shutdown(calls.errors), calls.errors
    assert DRAIN_S - 0.5 <= ended_after_s < DRAIN_S + 5, ended_after_s
    # Every model unloaded (the front, its engine, the idle session front): a clean exit, not the exit
    # timeout's kill.
    exit_timeout_s = server.settings.triton_exit_timeout_s
    assert exit_code == 0 and stopped_after_s < exit_timeout_s, (exit_code, stopped_after_s)


def test_a_session_left_open_gets_the_retry_error_when_the_drain_ends_not_at_the_kill(server, calls):
    # A text that never ends: the session speaks what it has, then waits for more.
    opening = "Agents speak while they think, one word after another, and this one goes on and on"
    _open_session(calls, contract.CUSTOM_VOICE_SESSION, 7, opening, speaker="ryan")
    _first_audio(calls, "s7")
    ended_after_s, stopped_after_s, exit_code = _stop(server, calls)
    assert _retryable_shutdown(calls.errors), calls.errors
    assert DRAIN_S - 0.5 <= ended_after_s < DRAIN_S + 5, ended_after_s
    # The session's client never sent its END: nothing on the server waits for it.
    exit_timeout_s = server.settings.triton_exit_timeout_s
    assert exit_code == 0 and stopped_after_s < exit_timeout_s, (exit_code, stopped_after_s)
