"""The voice-agent session contract (``session_id``, ``session_start``, ``session_end``) attacked against a
real tritonserver: as a direct client (tritonclient.grpc, streaming) and through the gateway.

One server per module with few engine slots (``max_active_streams`` 3, ``max_queued_streams`` 2), so that
overload is cheap to reach; the last test stops it (SIGTERM) with sessions open.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from websockets.sync.client import connect as ws_connect

from qwen3_tts_serving import contract, server_watch
from qwen3_tts_serving.launcher import TritonServer
from qwen3_tts_serving.load_board import LoadBoard, board_path

from .conftest import Gateway, own_server, own_server_settings, running_gateway
from .test_triton_models import (
    AUDIO_ATOL,
    StreamingCalls,
    StreamResult,
    _input,
    _next_error,
    _open_session,
    _session_inputs,
)

pytestmark = pytest.mark.e2e

MODEL = contract.CUSTOM_VOICE_SESSION
ENGINE = "custom_voice_engine_0"
SLOTS = 3
QUEUED = 2
QUEUE_WAIT_S = 8.0
DRAIN_S = 2.0
GREEDY = {"speaker": "ryan", "do_sample": False}
MISSING_SESSION_ID = "session_id is required on every request of a session: UINT64 [1]"


@pytest.fixture(scope="module")
def server(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("session-contract")
    settings = own_server_settings(
        root,
        tiny_checkpoints,
        triton_drain_timeout_s=DRAIN_S,
        max_active_streams=SLOTS,
        max_queued_streams=QUEUED,
        max_queue_wait_s=QUEUE_WAIT_S,
        session_idle_timeout_s=20.0,
    )
    with own_server(settings, root, ["custom_voice", MODEL]) as started:
        yield started


@pytest.fixture
def calls(server: TritonServer) -> Iterator[StreamingCalls]:
    streaming = StreamingCalls(server.grpc_url)
    yield streaming
    streaming.close()


def _send(calls: StreamingCalls, request_id: str, inputs: list[grpcclient.InferInput]) -> None:
    calls.results[request_id] = StreamResult()
    calls.client.async_stream_infer(MODEL, inputs, request_id=request_id, enable_empty_final_response=True)


def _engine_load(server: TritonServer) -> int | None:
    """Streams the engine holds or queues, and sessions waiting for their first text (its load board)."""
    return LoadBoard(board_path(server.model_repository / ENGINE)).load()


def _settles_to_idle(server: TritonServer, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _engine_load(server) != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _whole(server: TritonServer, text: str, session_id: int) -> np.ndarray:
    """The audio of ``text`` given at once to a session (START and END on one request)."""
    whole = StreamingCalls(server.grpc_url)
    _send(whole, "whole", _session_inputs(text, session_id, start=True, end=True, **GREEDY))
    audio = whole.wait()["whole"].audio()
    whole.close()
    assert not whole.errors, whole.errors
    return audio


def _first_audio(calls: StreamingCalls, request_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not calls.results[request_id].chunks:
        assert not calls.errors, calls.errors
        calls._record(*calls.events.get(timeout=max(0.1, deadline - time.monotonic())))


# --------------------------------------------------------------------------------------------- ordering
def test_sessions_fed_a_character_at_a_time_in_one_burst_speak_as_the_whole_text(server, calls):
    """Dozens of requests back to back on one stream, so that the dynamic batcher hands the front several
    at once, the STARTs in the same batch as their first text: each session's audio is its whole text's."""
    texts = {
        700: "Agents speak while they think.",
        701: "One word after another, quickly now!",
        702: "Hello, world: a third voice.",
    }
    requests = [(f"s{sid}", _session_inputs("", sid, start=True, **GREEDY)) for sid in texts]
    for index in range(max(map(len, texts.values()))):
        for sid, text in texts.items():
            if index < len(text):
                last = index == len(text) - 1
                requests.append((f"t{sid}-{index}", _session_inputs(text[index], sid, end=last)))
    assert len(requests) > 90
    for request_id, inputs in requests:  # tensors built first: they leave back to back
        _send(calls, request_id, inputs)
    results = calls.wait(timeout=120)
    assert not calls.errors, calls.errors[:3]
    for sid, text in texts.items():
        streamed = results[f"s{sid}"]
        assert streamed.chunks[-1]["finish_reason"] == "stop"
        np.testing.assert_allclose(streamed.audio(), _whole(server, text, sid + 100), atol=AUDIO_ATOL)


# ------------------------------------------------------------------------------------ the ID and flags
@pytest.mark.parametrize("session_id", [0, 2**64 - 1])
def test_the_ends_of_the_uint64_range_are_session_ids_like_any_other(calls, session_id):
    _send(calls, "start", _session_inputs("Hello", session_id, start=True, **GREEDY))
    _send(calls, "end", _session_inputs(" there.", session_id, end=True))
    results = calls.wait(timeout=60)
    assert not calls.errors, calls.errors
    assert results["start"].chunks[-1]["finish_reason"] == "stop" and results["start"].audio().size
    assert results["end"].final and not results["end"].chunks  # the text's empty FINAL


def test_start_and_end_on_one_request_with_no_text_ends_the_session_at_once(calls):
    _send(calls, "empty", _session_inputs("", 7301, start=True, end=True, **GREEDY))
    result = calls.wait(timeout=30)["empty"]
    assert not calls.errors, calls.errors
    assert result.chunks[-1]["is_last"] and result.chunks[-1]["finish_reason"] == "stop"
    assert result.audio().size == 0


def test_requests_for_sessions_that_are_not_open_are_refused_and_the_id_opens_again(calls):
    _send(calls, "end-unknown", _session_inputs("", 7400, end=True))
    assert _next_error(calls) == (
        "no open session 7400: it finished, timed out or never started "
        "(a session's first request carries session_start)"
    )
    _send(calls, "spoken", _session_inputs("Said and done.", 7400, start=True, end=True, **GREEDY))
    _send(calls, "after-end", _session_inputs(" More.", 7400))
    late = _next_error(calls)  # its input was closed: still speaking, or already done
    assert "session 7400's input is closed" in late or "no open session 7400" in late, late
    calls.wait(timeout=60)
    assert calls.results["spoken"].chunks[-1]["finish_reason"] == "stop"  # refusing the text cost it nothing
    for again in range(3):  # the ID of a finished session opens at once, as soon as its last chunk is in
        _send(calls, f"again-{again}", _session_inputs("Again.", 7400, start=True, end=True, **GREEDY))
        assert calls.wait(timeout=60)[f"again-{again}"].chunks[-1]["finish_reason"] == "stop"
    assert len(calls.errors) == 2


def test_a_request_without_a_session_id_or_with_another_dtype_is_refused_naming_it(calls):
    _send(calls, "missing", [_input("session_start", True), _input("text", "Hi."), _input("speaker", "ryan")])
    # It reached the front (Triton 2.51 counts a request's inputs, it does not check the required ones by
    # name), which failed it with a Python traceback.
    assert _next_error(calls) == MISSING_SESSION_ID
    _send(calls, "missing-text", [_input("text", " more")])
    assert _next_error(calls) == MISSING_SESSION_ID
    signed = grpcclient.InferInput("session_id", [1, 1], "INT64")
    signed.set_data_from_numpy(np.array([[5]], dtype=np.int64))
    _send(calls, "signed", [signed, _input("session_start", True), _input("text", "Hi.")])
    assert "'session_id' data-type is 'INT64', but model 'custom_voice_session' expects 'UINT64'" in (
        _next_error(calls)
    )
    # And the stream serves on.
    _send(calls, "fine", _session_inputs("Fine.", 7500, start=True, end=True, **GREEDY))
    assert calls.wait(timeout=60)["fine"].chunks[-1]["finish_reason"] == "stop"


def test_one_id_from_two_clients_at_once_the_second_start_is_refused_and_the_first_goes_on(server, calls):
    other = StreamingCalls(server.grpc_url)
    try:
        _open_session(calls, MODEL, 7600, "The first client speaks", **GREEDY)
        _first_audio(calls, "s7600")  # two streams are not ordered: the first START must be in first
        _send(other, "second", _session_inputs("The second one", 7600, start=True, speaker="aiden"))
        assert _next_error(other) == "session 7600 is already running"
        _send(calls, "rest", _session_inputs(" and finishes.", 7600, end=True))
        assert calls.wait(timeout=60)["s7600"].chunks[-1]["finish_reason"] == "stop"
        assert not calls.errors
        _send(other, "later", _session_inputs("Now it is mine.", 7600, start=True, end=True, **GREEDY))
        assert other.wait(timeout=60)["later"].chunks[-1]["finish_reason"] == "stop"
    finally:
        other.close()


# ---------------------------------------------------------------------------------- leaving and overload
def test_clients_that_leave_without_end_free_every_slot_and_their_ids(server):
    """More sessions than the engine has slots, speaking, waiting for text or not started, left without END
    (the gRPC stream cancelled): the engine is back to idle at once, and the IDs and slots serve again."""
    assert _settles_to_idle(server, 10)
    leaving = StreamingCalls(server.grpc_url)
    long_text = " ".join(["A long sentence to keep it speaking for a while."] * 4)
    _open_session(leaving, MODEL, 7700, long_text, **GREEDY)
    _open_session(leaving, MODEL, 7701, "Short words then wait", **GREEDY)
    _open_session(leaving, MODEL, 7702, "", **GREEDY)
    _open_session(leaving, MODEL, 7703, "Half", **GREEDY)
    for sid in range(7704, 7704 + QUEUED):  # queued for a slot
        _open_session(leaving, MODEL, sid, "Waiting for a slot", **GREEDY)
    # Two speaking or waiting in a slot, two not started (no whole word yet), the rest in a slot or queued.
    deadline = time.monotonic() + 30
    while not leaving.results["s7700"].chunks or _engine_load(server) != 4 + QUEUED:
        assert time.monotonic() < deadline, _engine_load(server)
        try:
            leaving._record(*leaving.events.get(timeout=0.1))
        except queue.Empty:
            pass
    assert not leaving.errors, leaving.errors
    leaving.close()
    assert _settles_to_idle(server, 3), f"the engine still holds {_engine_load(server)} streams"

    back = StreamingCalls(server.grpc_url)
    try:
        started = time.monotonic()
        ids = list(range(7700, 7704 + QUEUED))
        # In waves the queue holds: STARTs that arrive together all wait in it before admission takes any.
        for wave in (ids[index : index + QUEUED] for index in range(0, len(ids), QUEUED)):
            for sid in wave:
                _send(back, f"s{sid}", _session_inputs("Back.", sid, start=True, end=True, **GREEDY))
            results = back.wait(timeout=60)
        assert not back.errors, back.errors
        assert all(result.chunks[-1]["finish_reason"] == "stop" for result in results.values())
        assert results["s7700"].times[0] - started < 10
    finally:
        back.close()


def test_session_starts_past_the_queue_are_refused_at_once(server, calls):
    """Sessions past the engine's slots and queue places are refused at once (UNAVAILABLE, "queue is
    full"; retry), as plain streams are: they queued without a bound, each waiting out max_queue_wait_s."""
    assert _settles_to_idle(server, 10)
    extra = 3
    for sid in range(7800, 7800 + SLOTS + QUEUED + extra):
        _open_session(calls, MODEL, sid, "Some words to say and then wait", **GREEDY)
    deadline = time.monotonic() + 2.0
    while len(calls.errors) < extra and time.monotonic() < deadline:
        try:
            calls._record(*calls.events.get(timeout=0.1))
        except queue.Empty:
            pass
    # The board is published after each step: the refused sessions leave it at the next one.
    deadline = time.monotonic() + 2.0
    while (queued := _engine_load(server) or 0) > SLOTS + QUEUED and time.monotonic() < deadline:
        time.sleep(0.05)
    calls.close()  # leaves nothing behind whatever the outcome
    assert _settles_to_idle(server, 5)
    held = f"{queued} streams held or queued for {SLOTS} slots and {QUEUED} places"
    # At least the extra ones; more when several STARTs' text reached the queue before admission took any.
    assert extra <= len(calls.errors) <= extra + SLOTS and queued <= SLOTS + QUEUED, held
    # The queue full, or too many sessions waiting for their first text: the retryable overload either way.
    overloaded = [contract.classify_error(e) is contract.ErrorKind.OVERLOADED for e in calls.errors]
    assert all(overloaded) and all(contract.SHUTTING_DOWN not in e for e in calls.errors), calls.errors


# ------------------------------------------------------------------------------------------------ stop
def _gateway_session(gateway: Gateway, text: str, events: list[dict[str, Any]]) -> None:
    """A gateway session that speaks ``text`` and keeps its input open; its JSON events go to ``events``."""
    with ws_connect(gateway.ws_url + "/ws/session", open_timeout=30, max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "voice": "ryan", "language": "english", "do_sample": False}))
        ws.send(json.dumps({"type": "text", "text": text}))
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, str):
                events.append(json.loads(message))
                if events[-1]["type"] in ("done", "error"):
                    return


def test_sigterm_with_sessions_open_ends_each_with_the_retry_error_and_exits_0(server, tmp_path):
    """Run last: it stops the module's server. Sessions in every state (not started, a partial word, waiting
    for text, speaking; direct and through the gateway) each get the retryable "shutting down" error when
    the drain ends, and the server exits with status 0 before its exit timeout."""
    long_text = " ".join(["A stream that goes on well past the drain of the server it runs on."] * 10)
    states = {"unstarted": "", "partial": "Half", "waiting": "Short words then wait", "speaking": long_text}
    clients = {name: StreamingCalls(server.grpc_url) for name in states}
    with running_gateway(server, tmp_path / "gateway", request_timeout_s=600.0) as gateway:
        gateway_events: list[dict[str, Any]] = []
        via_gateway = threading.Thread(
            target=_gateway_session, args=(gateway, "Words through the gateway, then more", gateway_events)
        )
        via_gateway.start()
        for index, (name, text) in enumerate(states.items()):
            _open_session(clients[name], MODEL, 7900 + index, text, max_new_tokens=4000, **GREEDY)
        deadline = time.monotonic() + 60
        while not clients["speaking"].results["s7903"].chunks or _engine_load(server) < 5:
            assert time.monotonic() < deadline, _engine_load(server)
            clients["speaking"]._record(*clients["speaking"].events.get(timeout=60))
        time.sleep(3 * server_watch.POLL_S)  # the models see the server up at their next look

        exit_codes: list[int | None] = []
        stopper = threading.Thread(target=lambda: exit_codes.append(server.stop()))  # SIGTERM, waits
        sigterm_at = time.monotonic()
        stopper.start()
        ended_after_s = {}
        for name, client in clients.items():
            try:
                client.wait(timeout=DRAIN_S + 30)
            finally:
                ended_after_s[name] = time.monotonic() - sigterm_at
                client.close()
        via_gateway.join(timeout=DRAIN_S + 30)
        stopper.join(timeout=server.settings.triton_exit_timeout_s + 30)
    for name, client in clients.items():
        assert len(client.errors) == 1 and contract.SHUTTING_DOWN in client.errors[0], (name, client.errors)
        assert ended_after_s[name] < DRAIN_S + 5, (name, ended_after_s)
    assert gateway_events and gateway_events[-1]["type"] == "error", gateway_events
    assert gateway_events[-1]["status"] == 503 and gateway_events[-1]["fatal"], gateway_events[-1]
    stopped_after_s = time.monotonic() - sigterm_at
    assert exit_codes == [0] and stopped_after_s < server.settings.triton_exit_timeout_s, (
        exit_codes,
        stopped_after_s,
    )
