"""The ``/ws/session`` protocol over real WebSocket connections, the fake engine standing in for Triton.

Only the gateway's own logic (messages, errors, idle handling, cancellation) is checked here; the real
session models are driven in tests/e2e/test_agent_sessions.py.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread
from qwen3_tts_gateway.errors import EngineFailureError
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect as ws_connect

from .conftest import clip, make_settings, wait_until
from .fakes import SAMPLES_PER_CHAR, FakeEngine

START = {"type": "start", "voice": "ryan", "language": "english"}


def session_client(tmp_path: Path, engine: FakeEngine, **overrides: Any) -> TestClient:
    settings = make_settings(tmp_path, **{"session_idle_timeout_s": 30.0, **overrides})
    return TestClient(create_app(settings=settings, engine=engine))


def test_text_in_audio_out(tmp_path: Path) -> None:
    engine = FakeEngine()
    with session_client(tmp_path, engine) as client, client.websocket_connect("/ws/session") as ws:
        ws.send_json({**START, "lookahead_tokens": 3, "do_sample": False, "instruct": "calmly"})
        started = ws.receive_json()
        assert started == {
            "type": "started",
            "session_id": engine.sessions[0].session_id,
            "sample_rate": 24_000,
            "format": "pcm",
            "stream_format": "binary",
            "voice": "ryan",
        }
        ws.send_json({"type": "text", "text": "Hel"})
        assert len(ws.receive_bytes()) == 3 * SAMPLES_PER_CHAR * 2
        ws.send_json({"type": "text", "text": "lo", "flush": True})
        assert len(ws.receive_bytes()) == 2 * SAMPLES_PER_CHAR * 2
        ws.send_json({"type": "flush"})
        ws.send_json({"type": "end", "text": " there."})
        assert len(ws.receive_bytes()) == 7 * SAMPLES_PER_CHAR * 2
        done = ws.receive_json()
        assert done == {
            "type": "done",
            "session_id": started["session_id"],
            "finish_reason": "stop",
            "duration": 0.12,
            "chunks": 3,
            "sample_rate": 24_000,
            "text_chars": 12,
        }
    session = engine.sessions[0]
    assert session.fragments == [("Hel", False), ("lo", True), ("", True), (" there.", False)]
    assert session.request.model == "custom_voice_session" and session.request.lookahead_tokens == 3
    synthesis = session.request.synthesis
    assert (synthesis.speaker, synthesis.language, synthesis.instruct, synthesis.text) == (
        "ryan", "english", "calmly", ""
    )  # fmt: skip
    assert synthesis.sampling.do_sample is False and not session.cancelled


def test_json_chunks_and_a_second_session_on_the_same_socket(tmp_path: Path) -> None:
    engine = FakeEngine()
    with session_client(tmp_path, engine) as client, client.websocket_connect("/ws/session") as ws:
        ws.send_json({**START, "stream_format": "json", "text": "Hi. "})
        assert ws.receive_json()["type"] == "started"
        first = ws.receive_json()
        assert first["type"] == "chunk" and first["sequence"] == 0 and first["format"] == "pcm"
        assert len(base64.b64decode(first["audio"])) == 4 * SAMPLES_PER_CHAR * 2
        ws.send_json({"type": "end", "text": "Bye."})
        assert ws.receive_json()["sequence"] == 1
        assert ws.receive_json()["finish_reason"] == "stop"
        ws.send_json({**START, "voice": "Vivian", "format": "wav"})
        assert ws.receive_json()["format"] == "wav"
        ws.send_json({"type": "end", "text": "Again."})
        wav = ws.receive_bytes()
        assert wav[:4] == b"RIFF" and ws.receive_json()["type"] == "done"
    assert [s.request.synthesis.speaker for s in engine.sessions] == ["ryan", "vivian"]


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_encoded_formats_stream_playable_bytes(tmp_path: Path, fmt: str) -> None:
    engine = FakeEngine()
    with session_client(tmp_path, engine) as client, client.websocket_connect("/ws/session") as ws:
        ws.send_json({**START, "format": fmt})
        assert ws.receive_json()["type"] == "started"
        ws.send_json({"type": "text", "text": "x" * 100})  # one second of audio
        head = ws.receive_bytes()
        ws.send_json({"type": "end"})
        data = head
        while isinstance(message := ws.receive(), dict) and message.get("bytes"):
            data += message["bytes"]
    audio, rate = sf.read(io.BytesIO(head), dtype="float32")
    assert rate == 24_000 and len(audio) > 12_000  # the first frame alone decodes to most of that second
    audio, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert abs(len(audio) - 24_000) < 2400


def test_a_clone_voice_uses_its_stored_prompt(tmp_path: Path) -> None:
    engine = FakeEngine()
    with session_client(tmp_path, engine) as client:
        body = {"ref_audio": base64.b64encode(clip()).decode(), "ref_text": "A reference."}
        voice = client.post("/voices", json=body).json()["voice"]
        with client.websocket_connect("/ws/session") as ws:
            ws.send_json({**START, "voice": voice})
            assert ws.receive_json()["type"] == "started"
            ws.send_json({"type": "end", "text": "Mine."})
            ws.receive_bytes()
            assert ws.receive_json()["finish_reason"] == "stop"
    request = engine.sessions[0].request
    assert request.model == "voice_clone_session"
    assert (
        request.synthesis.voice_prompt is not None
        and request.synthesis.voice_prompt.ref_text == "A reference."
    )


def test_refused_starts_are_fatal_errors(tmp_path: Path) -> None:
    engine = FakeEngine(unready_models={"custom_voice_session"})
    with session_client(tmp_path, engine) as client, client.websocket_connect("/ws/session") as ws:
        ws.send_json({"type": "text", "text": "Hi"})
        error = ws.receive_json()
        assert (error["type"], error["status"], error["reason"], error["fatal"]) == (
            "error",
            422,
            "no_session",
            True,
        )
        ws.send_json({**START, "voice": "nobody"})
        error = ws.receive_json()
        assert error["status"] == 422 and error["reason"] == "invalid_request" and "ryan" in error["message"]
        ws.send_json({**START, "format": "flac"})
        assert "streamable: pcm, wav, mp3, opus" in ws.receive_json()["message"]
        ws.send_json({**START, "lookahead_tokens": 65})
        assert ws.receive_json()["status"] == 422
        ws.send_json({**START, "voice": "qwen3-clone-0123456789abcdef"})
        assert ws.receive_json()["status"] == 404
        ws.send_json(START)  # the model is not loaded: 503 before "started"
        error = ws.receive_json()
        assert error["status"] == 503 and error["reason"] == "server_overloaded" and error["fatal"]
        ws.send_text("not json")
        assert ws.receive_json()["reason"] == "protocol"
    assert engine.sessions == []


def test_refused_messages_leave_the_session_open(tmp_path: Path) -> None:
    engine = FakeEngine()
    with (
        session_client(tmp_path, engine, max_text_length=10) as client,
        client.websocket_connect("/ws/session") as ws,
    ):
        ws.send_json({**START, "text": "12345"})
        assert ws.receive_json()["type"] == "started"
        ws.receive_bytes()
        ws.send_json({"type": "text", "text": "123456"})  # 11 characters in all
        error = ws.receive_json()
        assert (error["status"], error["reason"], error["fatal"], error["param"]) == (
            422,
            "text_too_long",
            False,
            "text",
        )
        ws.send_json(START)
        assert ws.receive_json()["reason"] == "session_open"
        ws.send_json({"type": "text", "text": 5})
        assert ws.receive_json()["reason"] == "invalid_request"
        ws.send_json({"type": "shout"})
        assert ws.receive_json()["reason"] == "protocol"
        ws.send_json({"type": "end", "text": "12345"})
        ws.receive_bytes()
        ws.send_json({"type": "text", "text": "late"})  # raced the end: refused, the session finishes
        messages = [ws.receive_json(), ws.receive_json()]
        assert {m["type"] for m in messages} == {"done", "error"}
    assert engine.sessions[0].fragments == [("12345", False)]


def test_cancel(tmp_path: Path) -> None:
    engine = FakeEngine()
    with session_client(tmp_path, engine) as client, client.websocket_connect("/ws/session") as ws:
        ws.send_json(START)
        ws.receive_json()
        ws.send_json({"type": "text", "text": "Some"})
        ws.receive_bytes()
        ws.send_json({"type": "cancel"})
        done = ws.receive_json()
        assert done["type"] == "done" and done["finish_reason"] == "cancelled" and done["text_chars"] == 4
        metrics = client.get("/metrics").text
    assert engine.sessions[0].cancelled
    assert 'qwen3_tts_gateway_finish_reasons_total{reason="cancelled",route="/ws/session"} 1.0' in metrics
    assert "qwen3_tts_gateway_active_sessions 0.0" in metrics


def test_cancel_before_any_start_is_refused_but_not_fatal(tmp_path: Path) -> None:
    """Over a real socket (uvicorn), as on /ws/synthesize: a cancel on a socket that never had a start
    refuses that message only; the socket takes a start next."""
    nothing_to_cancel = {
        "type": "error",
        "status": 422,
        "message": "nothing to cancel: no session is open",
        "reason": "nothing_to_cancel",
        "fatal": False,
        "error_type": "invalid_request_error",
        "param": None,
    }
    engine = FakeEngine()
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    with (
        serve_in_thread(app) as url,
        ws_connect(url.replace("http://", "ws://") + "/ws/session", open_timeout=10) as ws,
    ):
        ws.send(json.dumps({"type": "cancel"}))
        assert json.loads(ws.recv(timeout=10)) == nothing_to_cancel
        ws.send(json.dumps(START))
        assert json.loads(ws.recv(timeout=10))["type"] == "started"
    assert len(engine.sessions) == 1


def test_a_cancel_that_crossed_the_end_is_ignored(tmp_path: Path) -> None:
    """Over a real socket (uvicorn). Cancel is idempotent: a cancel that reaches the gateway after its
    session ended (it crossed the "done" or the fatal error, or a cancel before it already stopped the
    session) gets no answer, so a client that sends its next start on the same socket at once reads
    "started" first, not a stale error."""
    engine = FakeEngine()
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    cancel = json.dumps({"type": "cancel"})
    with (
        serve_in_thread(app) as url,
        ws_connect(url.replace("http://", "ws://") + "/ws/session", open_timeout=10) as ws,
    ):

        def event() -> dict[str, Any]:
            return json.loads(ws.recv(timeout=10))

        ws.send(json.dumps({**START, "stream_format": "json"}))
        assert event()["type"] == "started"
        ws.send(json.dumps({"type": "end", "text": "Hi."}))
        assert event()["type"] == "chunk"
        assert event()["finish_reason"] == "stop"
        # The user's stop crossed the "done" (the gateway cannot tell it from one sent after reading it);
        # the next session starts at once on the same socket.
        ws.send(cancel)
        ws.send(json.dumps(START))
        assert event()["type"] == "started"
        ws.send(cancel)
        ws.send(cancel)  # pressed twice: the first one stops the session, the second finds it stopped
        assert event()["finish_reason"] == "cancelled"
        ws.send(json.dumps({**START, "voice": "nobody"}))  # refused: its fatal error crosses the cancel
        ws.send(cancel)
        ws.send(json.dumps(START))
        refused = event()
        assert (refused["type"], refused["fatal"], refused["reason"]) == ("error", True, "invalid_request")
        assert event()["type"] == "started"
    assert len(engine.sessions) == 3 and engine.sessions[1].cancelled and not engine.sessions[0].cancelled


@contextmanager
def session_socket(engine: FakeEngine, tmp_path: Path, **overrides: Any) -> Iterator[Any]:
    """A real /ws/session connection to the gateway under uvicorn."""
    app = create_app(settings=make_settings(tmp_path, **overrides), engine=engine)
    with (
        serve_in_thread(app) as url,
        ws_connect(url.replace("http://", "ws://") + "/ws/session", open_timeout=10) as ws,
    ):
        yield ws


def events_of(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv(timeout=10)) for _ in range(count)]


def ids_of(event: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(type or reason of an error, id, start_id)."""
    return (event.get("reason", event["type"]), event.get("id"), event.get("start_id"))


def test_the_start_id_is_echoed_on_every_event_of_its_session(tmp_path: Path) -> None:
    """Over a real socket (uvicorn). A refusal answers the message it refuses (its ``id``) and names the open
    session (``start_id``): a client tells it from an event of its session."""
    engine = FakeEngine()
    with session_socket(engine, tmp_path, max_text_length=10) as ws:
        ws.send(json.dumps({**START, "stream_format": "json", "text": "Hi. ", "id": "s-1"}))
        started, chunk = events_of(ws, 2)
        assert (started["type"], started["id"], chunk["type"], chunk["id"]) == (
            "started",
            "s-1",
            "chunk",
            "s-1",
        )
        assert "start_id" not in started and "start_id" not in chunk
        ws.send(json.dumps({"type": "text", "text": "1234567", "id": "t-1"}))  # over the limit of 10
        ws.send(json.dumps({**START, "id": "s-2"}))  # a session is open
        ws.send(json.dumps({"type": "shout", "id": "x-1"}))
        ws.send(json.dumps({"type": "flush", "flush": True, "id": "f-1"}))  # invalid field
        ws.send(json.dumps({"type": "text", "text": 5}))  # no id of its own: the session's alone
        refusals = events_of(ws, 5)
        assert [ids_of(event) for event in refusals] == [
            ("text_too_long", "t-1", "s-1"),
            ("session_open", "s-2", "s-1"),
            ("protocol", "x-1", "s-1"),
            ("invalid_request", "f-1", "s-1"),
            ("invalid_request", None, "s-1"),
        ]
        assert not any(event["fatal"] for event in refusals)
        ws.send(
            json.dumps({"type": "text", "text": "OK", "id": "t-2"})
        )  # accepted: its audio is the session's
        ws.send(json.dumps({"type": "cancel", "id": "c-1"}))
        chunk, cancelled = events_of(ws, 2)
        assert [ids_of(chunk), ids_of(cancelled)] == [("chunk", "s-1", None), ("done", "s-1", None)]
        assert cancelled["finish_reason"] == "cancelled"
        ws.send(json.dumps({**START, "voice": "nobody", "id": "s-3"}))  # refused start: its own id
        ws.send(json.dumps({**START, "voice": "qwen3-clone-0123456789abcdef", "id": "s-4"}))  # 404
        ws.send(json.dumps({**START, "text": "Done.", "id": "s-5"}))
        ws.send(json.dumps({"type": "end", "id": "e-5"}))
        refused, not_found, started = events_of(ws, 3)
        binary = ws.recv(timeout=10)  # binary frames cannot carry the id
        done = json.loads(ws.recv(timeout=10))
    assert [ids_of(event) for event in (refused, not_found, started, done)] == [
        ("invalid_request", "s-3", None),
        ("not_found_error", "s-4", None),
        ("started", "s-5", None),
        ("done", "s-5", None),
    ]
    assert refused["fatal"] and not_found["fatal"] and isinstance(binary, bytes)
    assert done["finish_reason"] == "stop"
    assert [session.fragments for session in engine.sessions] == [[("OK", False)], [("", False)]]


def test_an_engine_failure_carries_the_start_id(tmp_path: Path) -> None:
    engine = FakeEngine(session_error=EngineFailureError("synthesis failed in the model server"))
    with session_socket(engine, tmp_path) as ws:
        ws.send(json.dumps({**START, "id": "s-1"}))
        started, error = events_of(ws, 2)
        assert (ids_of(started), ids_of(error), error["fatal"]) == (
            ("started", "s-1", None),
            ("server_error", "s-1", None),
            True,
        )


def test_messages_pipelined_after_a_refused_start_are_answered_under_their_own_ids(tmp_path: Path) -> None:
    """A client that sends start, text and end at once, the start refused: each error names the message it
    answers, so none of them reads as the answer to the client's next start."""
    engine = FakeEngine()
    with session_socket(engine, tmp_path) as ws:
        ws.send(json.dumps({"type": "cancel", "id": "c-0"}))  # before any start: refused, not fatal
        assert [(ids_of(event), event["fatal"]) for event in events_of(ws, 1)] == [
            (("nothing_to_cancel", "c-0", None), False)
        ]
        for message in [
            {**START, "voice": "nobody", "id": "s-1"},
            {"type": "text", "text": "Hello", "id": "t-1"},
            {"type": "flush", "id": "f-1"},
            {"type": "end", "text": " there.", "id": "e-1"},
            {"type": "cancel", "id": "c-1"},  # crossed the start's error: ignored
            {**START, "id": "s-2"},
        ]:
            ws.send(json.dumps(message))
        events = events_of(ws, 5)
    assert [(ids_of(event), event.get("fatal")) for event in events] == [
        (("invalid_request", "s-1", None), True),
        (("no_session", "t-1", None), True),
        (("no_session", "f-1", None), True),
        (("no_session", "e-1", None), True),
        (("started", "s-2", None), None),
    ]
    assert len(engine.sessions) == 1 and engine.sessions[0].fragments == []


@pytest.mark.parametrize("bad_id", ["", "x" * 65, "two words", "a/b", "{}", "\u00e9", 42, False, {"a": 1}])
def test_a_bad_id_refuses_that_message_only(tmp_path: Path, bad_id: object) -> None:
    """Before a start (the start itself included) and during a session: a 422 naming the rule, not fatal
    (nothing started, nothing ended), without the bad id."""
    rule = "id must be 1 to 64 characters, each a letter, digit, '.', '_', ':' or '-', got "
    engine = FakeEngine()
    with session_socket(engine, tmp_path) as ws:
        ws.send(json.dumps({**START, "id": bad_id}))
        ws.send(json.dumps({**START, "stream_format": "json", "id": "s-1"}))
        refused, started = events_of(ws, 2)
        ws.send(json.dumps({"type": "text", "text": "Not this", "id": bad_id}))
        ws.send(json.dumps({"type": "end", "text": "Hi.", "id": "e-1"}))
        refused_text, chunk, done = events_of(ws, 3)
    for error in (refused, refused_text):
        assert (error["type"], error["status"], error["reason"], error["fatal"], error["param"]) == (
            "error",
            422,
            "invalid_request",
            False,
            "id",
        ), error
        assert error["message"].startswith(f"body.id: {rule}") and "id" not in error, error
    assert "start_id" not in refused and refused_text["start_id"] == "s-1"
    assert [ids_of(event) for event in (started, chunk, done)] == [
        ("started", "s-1", None),
        ("chunk", "s-1", None),
        ("done", "s-1", None),
    ]
    assert len(engine.sessions) == 1 and engine.sessions[0].fragments == [("Hi.", False)]


def test_without_ids_the_events_have_no_ids(tmp_path: Path) -> None:
    engine = FakeEngine()
    with session_socket(engine, tmp_path, max_text_length=10) as ws:
        ws.send(json.dumps({"type": "cancel"}))
        ws.send(json.dumps({"type": "text", "text": "early"}))
        ws.send(json.dumps({**START, "voice": "nobody"}))
        ws.send(json.dumps({**START, "stream_format": "json", "text": "Hi. ", "id": None}))  # null: no id
        events = events_of(ws, 5)
        ws.send(json.dumps({"type": "text", "text": "x" * 20}))
        ws.send(json.dumps(START))
        ws.send(json.dumps({"type": "end", "text": "Bye."}))
        events += events_of(ws, 4)
    assert [event.get("reason", event["type"]) for event in events] == [
        "nothing_to_cancel",
        "no_session",
        "invalid_request",
        "started",
        "chunk",
        "text_too_long",
        "session_open",
        "chunk",
        "done",
    ]
    assert all("id" not in event and "start_id" not in event for event in events), events


def test_a_disconnect_cancels_the_session(tmp_path: Path) -> None:
    """Over a real socket (uvicorn): the client just goes away in the middle of a session."""
    engine = FakeEngine()
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as http:
        with ws_connect(url.replace("http://", "ws://") + "/ws/session", open_timeout=10) as ws:
            ws.send(json.dumps(START))
            assert json.loads(ws.recv(timeout=10))["type"] == "started"
            ws.send(json.dumps({"type": "text", "text": "Going"}))
            assert isinstance(ws.recv(timeout=10), bytes)
        assert wait_until(lambda: engine.sessions[0].cancelled)
        assert wait_until(lambda: "qwen3_tts_gateway_active_sessions 0.0" in http.get("/metrics").text)


def test_an_idle_session_ends_then_the_idle_socket_closes(tmp_path: Path) -> None:
    engine = FakeEngine()
    with session_client(tmp_path, engine, session_idle_timeout_s=0.3) as client:
        with client.websocket_connect("/ws/session") as ws:
            ws.send_json(START)
            ws.receive_json()
            ws.send_json({"type": "text", "text": "Wait"})
            ws.receive_bytes()
            started = time.monotonic()
            done = ws.receive_json()
            assert done["type"] == "done" and done["finish_reason"] == "idle_timeout"
            assert 0.25 < time.monotonic() - started < 2.0
            assert engine.sessions[0].cancelled  # its slot in the engine is freed
            error = ws.receive_json()  # no new session either: the connection goes
            assert (error["status"], error["reason"], error["fatal"]) == (408, "idle_timeout", True)
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1000
        metrics = client.get("/metrics").text
    assert 'qwen3_tts_gateway_finish_reasons_total{reason="idle_timeout",route="/ws/session"} 1.0' in metrics


def test_audio_still_playing_is_not_idle(tmp_path: Path) -> None:
    """Idle means no traffic either way: audio flowing to the client keeps the session alive."""
    engine = FakeEngine()
    with session_client(tmp_path, engine, session_idle_timeout_s=0.4) as client:
        with client.websocket_connect("/ws/session") as ws:
            ws.send_json(START)
            ws.receive_json()
            session = engine.sessions[0]
            for _ in range(4):  # the engine speaks every 0.2 s, the client says nothing
                time.sleep(0.2)
                session._speak("abc")
                ws.receive_bytes()
            ws.send_json({"type": "end"})
            assert ws.receive_json()["finish_reason"] == "stop"


def test_the_engine_idle_timeout_is_reported(tmp_path: Path) -> None:
    engine = FakeEngine(session_idle_timeout_s=0.2)
    with session_client(tmp_path, engine) as client, client.websocket_connect("/ws/session") as ws:
        ws.send_json(START)
        ws.receive_json()
        done = ws.receive_json()
        assert done["finish_reason"] == "idle_timeout" and done["chunks"] == 1
        ws.send_json({"type": "text", "text": "Late."})
        assert ws.receive_json()["reason"] == "no_session"


def test_an_engine_failure_is_a_fatal_error(tmp_path: Path) -> None:
    engine = FakeEngine(session_error=EngineFailureError("synthesis failed in the model server"))
    with session_client(tmp_path, engine) as client, client.websocket_connect("/ws/session") as ws:
        ws.send_json(START)
        ws.receive_json()
        error = ws.receive_json()
        assert (error["status"], error["fatal"], error["message"]) == (
            502,
            True,
            "synthesis failed in the model server",
        )


def test_auth(tmp_path: Path) -> None:
    engine = FakeEngine()
    with session_client(tmp_path, engine, api_keys=["k1"]) as client:
        with client.websocket_connect("/ws/session") as ws:
            assert ws.receive_json()["status"] == 401
        with client.websocket_connect("/ws/session?api_key=k1") as ws:
            ws.send_json(START)
            assert ws.receive_json()["type"] == "started"
        with client.websocket_connect("/ws/session", headers={"Authorization": "Bearer k1"}) as ws:
            ws.send_json({**START, "text": "ok"})
            assert ws.receive_json()["type"] == "started"
            assert np.frombuffer(ws.receive_bytes(), "<i2").size == 2 * SAMPLES_PER_CHAR
