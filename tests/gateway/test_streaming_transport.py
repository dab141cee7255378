"""WebSocket protocol and client disconnects over real connections.

The fake engine (see fakes.py) stands in for Triton so the gateway's own stream handling can be observed:
it records whether a stream was closed before its end, which is how the gateway cancels Triton.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread
from qwen3_tts_gateway.errors import EngineUnavailableError
from qwen3_tts_gateway.responses import UVICORN_INCOMPLETE_RESPONSE
from starlette.types import Receive, Scope, Send
from websockets.sync.client import connect as ws_connect

from .conftest import make_settings, wait_until
from .fakes import FakeEngine

REQUEST = {"text": "Hello there.", "speaker": "sohee"}


def ws_client(tmp_path: Path, engine: FakeEngine, **overrides: object) -> TestClient:
    return TestClient(create_app(settings=make_settings(tmp_path, **overrides), engine=engine))


def test_ws_binary_frames_then_done(tmp_path: Path) -> None:
    engine = FakeEngine()
    with ws_client(tmp_path, engine) as client, client.websocket_connect("/ws/synthesize") as ws:
        ws.send_json(REQUEST)
        assert ws.receive_json() == {
            "type": "start",
            "sample_rate": 24_000,
            "format": "pcm_s16le",
            "channels": 1,
        }
        frames = [ws.receive_bytes() for _ in range(3)]
        assert [len(frame) for frame in frames] == [9600] * 3
        done = ws.receive_json()
        assert done == {
            "type": "done",
            "finish_reason": "stop",
            "sample_rate": 24_000,
            "duration": 0.6,
            "chunks": 3,
        }
        ws.send_json({**REQUEST, "stream_format": "json", "voice": "Eric"})  # the socket is reusable
        assert ws.receive_json()["type"] == "start"
        chunks = [ws.receive_json() for _ in range(3)]
        assert [c["type"] for c in chunks] == ["chunk"] * 3 and chunks[-1]["is_last"]
        assert len(base64.b64decode(chunks[0]["audio"])) == 9600
        assert ws.receive_json()["type"] == "done"
    assert engine.requests[-1].speaker == "eric"


def test_ws_errors(tmp_path: Path) -> None:
    engine = FakeEngine()
    with ws_client(tmp_path, engine) as client, client.websocket_connect("/ws/synthesize") as ws:
        ws.send_json({"text": "hi", "speaker": "alloy"})
        error = ws.receive_json()
        assert error["type"] == "error" and error["status"] == 422 and "serena" in error["message"]
        ws.send_text("not json")
        assert ws.receive_json()["status"] == 422
        ws.send_json({"text": "hi", "voice": "qwen3-clone-0123456789abcdef"})
        assert ws.receive_json()["status"] == 404
        engine.error = EngineUnavailableError("the model server is out of memory; retry later")
        ws.send_json(REQUEST)
        assert ws.receive_json() == {
            "type": "error",
            "status": 503,
            "message": "the model server is out of memory; retry later",
            "param": None,
            "error_type": "server_overloaded",
        }


def test_ws_auth(tmp_path: Path) -> None:
    with ws_client(tmp_path, FakeEngine(), api_keys=["k"]) as client:
        with client.websocket_connect("/ws/synthesize") as ws:
            assert ws.receive_json()["status"] == 401
        with client.websocket_connect("/ws/synthesize?api_key=k") as ws:
            ws.send_json(REQUEST)
            assert ws.receive_json()["type"] == "start"
        with client.websocket_connect("/ws/synthesize", headers={"Authorization": "Bearer k"}) as ws:
            ws.send_json(REQUEST)
            assert ws.receive_json()["type"] == "start"


def test_ws_cancel_and_disconnect_cancel_the_stream(tmp_path: Path) -> None:
    engine = FakeEngine(chunks=200, delay_s=0.02)
    with ws_client(tmp_path, engine) as client:
        with client.websocket_connect("/ws/synthesize") as ws:
            ws.send_json(REQUEST)
            assert ws.receive_json()["type"] == "start"
            ws.receive_bytes()
            ws.send_json({"type": "cancel"})
            while (message := ws.receive()).get("text") is None:
                pass  # frames already in flight
            assert json.loads(message["text"])["finish_reason"] == "cancelled"
            assert engine.cancelled == 1
            ws.send_json(REQUEST)
            assert ws.receive_json()["type"] == "start"
            ws.receive_bytes()
        assert wait_until(lambda: engine.cancelled == 2)
    assert engine.completed == 0


def test_ws_cancel_before_any_request_is_answered(tmp_path: Path) -> None:
    """Over a real socket (uvicorn): a cancel on a socket that never had a request gets an error event, not
    silence, and the socket stays usable."""
    nothing_to_cancel = {
        "type": "error",
        "status": 422,
        "message": "nothing to cancel: no synthesis is running",
        "param": None,
        "error_type": "invalid_request_error",
    }
    app = create_app(settings=make_settings(tmp_path), engine=FakeEngine())
    with (
        serve_in_thread(app) as url,
        ws_connect(url.replace("http://", "ws://") + "/ws/synthesize", open_timeout=10) as ws,
    ):
        ws.send(json.dumps({"type": "cancel"}))
        assert json.loads(ws.recv(timeout=10)) == nothing_to_cancel
        ws.send(json.dumps({**REQUEST, "stream_format": "json"}))
        messages = [json.loads(ws.recv(timeout=10)) for _ in range(5)]
        assert [m["type"] for m in messages] == ["start", "chunk", "chunk", "chunk", "done"]


def test_ws_a_cancel_that_crossed_the_end_is_ignored(tmp_path: Path) -> None:
    """Over a real socket (uvicorn). Cancel is idempotent: a cancel that reaches the gateway after its
    request ended (it crossed the "done" or the error, or a cancel before it already stopped the request)
    gets no answer, so a client that sends its next request on the same socket at once reads that
    request's answer first, not a stale error."""
    engine = FakeEngine()
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    json_request = json.dumps({**REQUEST, "stream_format": "json"})
    cancel = json.dumps({"type": "cancel"})
    with (
        serve_in_thread(app) as url,
        ws_connect(url.replace("http://", "ws://") + "/ws/synthesize", open_timeout=10) as ws,
    ):

        def answer() -> list[dict[str, Any]]:
            """One request's answer, through its done or error."""
            messages = [json.loads(ws.recv(timeout=10))]
            while messages[-1]["type"] not in ("done", "error"):
                messages.append(json.loads(ws.recv(timeout=10)))
            return messages

        def types(messages: list[dict[str, Any]]) -> list[str]:
            return [message["type"] for message in messages]

        ws.send(json_request)
        assert types(answer()) == ["start", "chunk", "chunk", "chunk", "done"]
        # The user's stop crossed the "done" (the gateway cannot tell it from one sent after reading it);
        # the next request follows at once on the same socket.
        ws.send(cancel)
        ws.send(json_request)
        assert types(answer()) == ["start", "chunk", "chunk", "chunk", "done"]

        ws.send(json.dumps({"text": "hi", "speaker": "alloy"}))  # refused: its error crosses the cancel
        ws.send(cancel)
        ws.send(json_request)
        assert [(m["type"], m["status"]) for m in answer()] == [("error", 422)]
        assert types(answer()) == ["start", "chunk", "chunk", "chunk", "done"]

        engine.chunks, engine.delay_s = 200, 0.02
        ws.send(json_request)
        assert json.loads(ws.recv(timeout=10))["type"] == "start"
        ws.send(cancel)
        ws.send(cancel)  # pressed twice: the first one stops the stream, the second finds it stopped
        assert answer()[-1]["finish_reason"] == "cancelled"
        engine.chunks, engine.delay_s = 3, 0.0
        ws.send(json_request)
        assert types(answer()) == ["start", "chunk", "chunk", "chunk", "done"]
    assert engine.cancelled == 1 and engine.completed == 4


@contextmanager
def synthesize_socket(engine: FakeEngine, tmp_path: Path) -> Iterator[Any]:
    """A real /ws/synthesize connection to the gateway under uvicorn."""
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    with (
        serve_in_thread(app) as url,
        ws_connect(url.replace("http://", "ws://") + "/ws/synthesize", open_timeout=10) as ws,
    ):
        yield ws


def answer_of(ws: Any) -> list[dict[str, Any] | bytes]:
    """One request's answer through its done or error: JSON events as dicts, binary frames as bytes."""
    messages: list[dict[str, Any] | bytes] = []
    while True:
        message = ws.recv(timeout=10)
        messages.append(message if isinstance(message, bytes) else json.loads(message))
        if isinstance(messages[-1], dict) and messages[-1]["type"] in ("done", "error"):
            return messages


def ids_of(messages: list[dict[str, Any] | bytes]) -> list[tuple[str, str | None]]:
    """(type, id) of each message; a binary frame is ("binary", None): it cannot carry one."""
    return [
        ("binary", None) if isinstance(m, bytes) else (m["type"], m.get("id", "<none>")) for m in messages
    ]


def test_ws_a_request_id_is_echoed_on_every_event_of_that_request(tmp_path: Path) -> None:
    """Over a real socket (uvicorn): a client that pipelines requests, or reuses the socket, matches every
    event to the message it answers by the id it gave."""
    engine = FakeEngine()
    with synthesize_socket(engine, tmp_path) as ws:
        # Pipelined: none of these streams, so each is answered in turn.
        ws.send(json.dumps({"type": "cancel", "id": "stop-0"}))  # nothing to cancel: the cancel's own id
        ws.send(json.dumps({"text": "hi", "speaker": "alloy", "id": "req:1"}))  # 422
        ws.send(json.dumps({**REQUEST, "voice": "qwen3-clone-0123456789abcdef", "id": "req.2"}))  # 404
        errors = [answer_of(ws) for _ in range(3)]
        assert [ids_of(error) for error in errors] == [
            [("error", "stop-0")],
            [("error", "req:1")],
            [("error", "req.2")],
        ]
        assert [error[0]["status"] for error in errors] == [422, 422, 404]  # type: ignore[index]
        ws.send(json.dumps({**REQUEST, "stream_format": "json", "id": "req-3"}))
        assert ids_of(answer_of(ws)) == [("start", "req-3")] + [("chunk", "req-3")] * 3 + [("done", "req-3")]
        ws.send(json.dumps({**REQUEST, "id": "req-4"}))  # binary frames cannot carry it; the events do
        assert ids_of(answer_of(ws)) == [("start", "req-4")] + [("binary", None)] * 3 + [("done", "req-4")]
        engine.error, engine.error_at_chunk = EngineUnavailableError("out of memory"), 1  # after "start"
        ws.send(json.dumps({**REQUEST, "stream_format": "json", "id": "req_5"}))
        failed = answer_of(ws)
        assert ids_of(failed) == [("start", "req_5"), ("chunk", "req_5"), ("error", "req_5")]
        assert failed[-1]["status"] == 503  # type: ignore[index]


def test_ws_a_message_during_a_stream_is_answered_under_its_own_id(tmp_path: Path) -> None:
    engine = FakeEngine(chunks=200, delay_s=0.02)
    with synthesize_socket(engine, tmp_path) as ws:
        ws.send(json.dumps({**REQUEST, "stream_format": "json", "id": "long"}))
        assert json.loads(ws.recv(timeout=10))["id"] == "long"
        ws.send(json.dumps({**REQUEST, "id": "next"}))  # refused: one request streams at a time
        ws.send(json.dumps({"type": "cancel", "id": "no spaces"}))  # refused for its id: the stream goes on
        ws.send(json.dumps({"type": "cancel", "id": "stop"}))
        busy: Any = answer_of(ws)  # chunks of "long", then the refusal of "next"
        assert {event["id"] for event in busy[:-1]} == {"long"}
        assert busy[-1]["id"] == "next" and "already streaming" in busy[-1]["message"]
        bad_cancel: Any = answer_of(ws)[-1]
        assert (bad_cancel["type"], bad_cancel["param"], "id" in bad_cancel) == ("error", "id", False)
        done: Any = answer_of(ws)[-1]
        assert (done["type"], done["finish_reason"]) == ("done", "cancelled")
        assert done["id"] == "long"  # the request's done, not the cancel's


@pytest.mark.parametrize("bad_id", ["", "x" * 65, "a b", "../etc", "%s", 7, True, ["a"]])
def test_ws_a_bad_id_refuses_that_message_only(tmp_path: Path, bad_id: object) -> None:
    engine = FakeEngine()
    with synthesize_socket(engine, tmp_path) as ws:
        ws.send(json.dumps({**REQUEST, "id": bad_id}))
        error = json.loads(ws.recv(timeout=10))
        assert (error["type"], error["status"], error["param"]) == ("error", 422, "id"), error
        rule = "id must be 1 to 64 characters, each a letter, digit, '.', '_', ':' or '-', got "
        assert error["message"].startswith(f"body.id: {rule}"), error
        assert "id" not in error  # the bad id is not echoed
        ws.send(json.dumps({**REQUEST, "stream_format": "json", "id": "A-z_0.9:" + "x" * 56}))  # 64: fine
        assert {event["type"] for event in answer_of(ws)} == {"start", "chunk", "done"}  # type: ignore[index]
    assert len(engine.requests) == 1


def test_ws_without_ids_the_events_have_no_id(tmp_path: Path) -> None:
    engine = FakeEngine()
    with synthesize_socket(engine, tmp_path) as ws:
        events: list[Any] = []
        for message in [
            {"type": "cancel"},
            {**REQUEST, "stream_format": "json"},
            {**REQUEST, "id": None},  # null: no id
            {"text": "hi", "speaker": "alloy"},
        ]:
            ws.send(json.dumps(message))
            events += [event for event in answer_of(ws) if isinstance(event, dict)]
    json_answer = ["start", "chunk", "chunk", "chunk", "done"]
    assert [event["type"] for event in events] == ["error", *json_answer, "start", "done", "error"]
    assert all("id" not in event for event in events), events


@pytest.mark.parametrize("path", ["/synthesize/stream", "/v1/audio/speech", "/synthesize"])
def test_http_disconnect_cancels_the_stream(tmp_path: Path, path: str) -> None:
    engine = FakeEngine(chunks=500, delay_s=0.02)
    body = {"input": "Hi.", "voice": "ryan", "response_format": "pcm"} if path.startswith("/v1") else REQUEST
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        if path == "/synthesize":  # whole-file endpoint: give up while it is synthesizing
            with pytest.raises(httpx.ReadTimeout):
                client.post(path, json=body, timeout=0.5)
        else:
            with client.stream("POST", path, json=body) as response:
                assert response.status_code == 200
                next(response.iter_bytes())
        assert wait_until(lambda: engine.cancelled == 1), "the upstream stream was not cancelled"
        assert engine.completed == 0
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/synthesize/stream", {**REQUEST, "stream_format": "audio", "response_format": "wav"}),
        ("/v1/audio/speech", {"input": "Hi.", "voice": "ryan", "response_format": "mp3"}),
    ],
)
def test_raw_audio_stream_failing_midway_is_an_incomplete_body(
    tmp_path: Path, path: str, body: dict[str, str]
) -> None:
    """Raw audio has no place for an error line: a failure after the first byte must not end the body like
    a finished file (a 200 with a cut-off file would pass for a whole utterance)."""
    engine = FakeEngine(chunks=5, error=EngineUnavailableError("out of memory"), error_at_chunk=2)
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
                response.read()
        assert client.get("/health").status_code == 200


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def uvicorn_errors() -> Iterator[list[str]]:
    """What uvicorn logs to "uvicorn.error" (attached once uvicorn's own logging config has run, as that
    removes the logger's handlers)."""
    collected = _Collected()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(collected)
    try:
        yield collected.messages
    finally:
        logger.removeHandler(collected)


async def _unfinished_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that returns mid-body by mistake (not the gateway's deliberate cut)."""
    if scope["type"] == "lifespan":
        await receive()  # startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})


# The one record of each deliberate cut of a raw audio stream: (level, logger, message pattern).
CUT_LOG_LINES = {
    "backend_failure": (
        logging.WARNING,
        "qwen3_tts_gateway.service",
        r"/v1/audio/speech: stream failed after 2 chunks: out of memory",
    ),
    "client_left": (
        logging.INFO,
        "qwen3_tts_gateway.responses",
        r"client disconnected from /v1/audio/speech after \d+ chunks; synthesis cancelled",
    ),
}


@pytest.mark.parametrize("cut", sorted(CUT_LOG_LINES))
def test_a_cut_audio_stream_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: str
) -> None:
    """A raw audio stream cut on purpose is one log line: the backend's failure mid-stream a warning with its
    reason, a client that went away an info (not a fault of the gateway); uvicorn's "returned without
    completing response" error is dropped for the deliberate cut."""
    if cut == "backend_failure":
        engine = FakeEngine(chunks=5, error=EngineUnavailableError("out of memory"), error_at_chunk=2)
    else:
        engine = FakeEngine(chunks=500, delay_s=0.02)
    app = create_app(settings=make_settings(tmp_path), engine=engine)
    body = {"input": "Hi.", "voice": "ryan", "response_format": "pcm"}
    with caplog.at_level(logging.DEBUG, logger="qwen3_tts_gateway"):
        with serve_in_thread(app) as url, uvicorn_errors() as logged, httpx.Client(base_url=url) as client:
            caplog.clear()  # the start-up lines
            with client.stream("POST", "/v1/audio/speech", json=body) as response:
                assert response.status_code == 200
                if cut == "backend_failure":
                    with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
                        response.read()
                else:
                    next(response.iter_bytes())
            if cut == "client_left":
                assert wait_until(lambda: engine.cancelled == 1)
        # The server has stopped: every record of the request is in.
    assert logged == []
    records = [record for record in caplog.records if record.name.startswith("qwen3_tts_gateway")]
    assert [(record.levelno, record.name) for record in records] == [CUT_LOG_LINES[cut][:2]]
    assert re.fullmatch(CUT_LOG_LINES[cut][2], records[0].getMessage())


def test_an_unfinished_response_of_another_app_is_still_logged() -> None:
    """uvicorn's error is dropped only for the gateway's deliberate cut."""
    with serve_in_thread(_unfinished_app) as url, uvicorn_errors() as logged:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url, timeout=10)
    assert logged == [UVICORN_INCOMPLETE_RESPONSE]
