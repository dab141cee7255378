"""A WebSocket without a valid API key: both routes, a missing and a wrong key alike, get one error event in
the route's usual shape (saying what is wrong and how to pass a key), then a 1008 close.

Real uvicorn and a real WebSocket client (the fake engine stands in for Triton, which is never reached).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from .conftest import make_settings
from .fakes import FakeEngine

KEY = "right-key"
HOW_TO_PASS = "(Authorization: Bearer <key>, or ?api_key=<key> where headers cannot be set)"
# What each route sends first; a refused socket never gets to answer it.
FIRST_MESSAGE = {
    "/ws/synthesize": {"text": "Hello.", "speaker": "ryan"},
    "/ws/session": {"type": "start", "voice": "ryan", "language": "english"},
}
# The route's fields beyond /ws/synthesize's error event.
SESSION_FIELDS = {"/ws/synthesize": {}, "/ws/session": {"reason": "authentication_error", "fatal": True}}
CALLERS = {
    "no key": ("", {}),
    "empty query key": ("?api_key=", {}),
    "wrong query key": ("?api_key=wrong", {}),
    "wrong header key": ("", {"Authorization": "Bearer wrong"}),
    "wrong query key, other scheme": ("?api_key=wrong", {"Authorization": "Basic abc"}),
}


@pytest.fixture(scope="module")
def ws_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(tmp_path_factory.mktemp("ws-auth"), api_keys=[KEY])
    with serve_in_thread(create_app(settings=settings, engine=FakeEngine())) as url:
        yield url.replace("http://", "ws://")


def refusal(ws_base: str, route: str, query: str, headers: dict[str, str]) -> tuple[list[Any], int, str]:
    """(messages received, close code, close reason) of a socket that sends its first message and reads."""
    messages: list[Any] = []
    with ws_connect(ws_base + route + query, additional_headers=headers, open_timeout=10) as ws:
        try:
            ws.send(json.dumps(FIRST_MESSAGE[route]))
        except ConnectionClosed:
            pass  # already closed by the server: its event is still to be read
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=10)))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "no close frame"
            return messages, closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


def other_error_event(ws_base: str, route: str) -> dict[str, Any]:
    """An error event of the same route with a valid key (a message that is not JSON)."""
    with ws_connect(f"{ws_base}{route}?api_key={KEY}", open_timeout=10) as ws:
        ws.send("not json")
        return json.loads(ws.recv(timeout=10))


@pytest.mark.parametrize("route", ["/ws/synthesize", "/ws/session"])
@pytest.mark.parametrize("caller", list(CALLERS))
def test_a_missing_or_wrong_key_gets_the_error_event_then_1008(ws_base: str, route: str, caller: str) -> None:
    query, headers = CALLERS[caller]
    messages, code, reason = refusal(ws_base, route, query, headers)
    problem = "invalid" if "wrong" in caller else "missing"
    message = f"{problem} API key {HOW_TO_PASS}"
    assert messages == [
        {
            "type": "error",
            "status": 401,
            "message": message,
            "param": None,
            "error_type": "authentication_error",
            **SESSION_FIELDS[route],
        }
    ]
    assert (code, reason) == (1008, message)
    # The same fields as the route's other error events, so one client handler reads them all.
    assert messages[0].keys() == other_error_event(ws_base, route).keys()


@pytest.mark.parametrize("route", ["/ws/synthesize", "/ws/session"])
def test_the_right_key_is_let_in(ws_base: str, route: str) -> None:
    for query, headers in ((f"?api_key={KEY}", {}), ("", {"Authorization": f"Bearer {KEY}"})):
        with ws_connect(ws_base + route + query, additional_headers=headers, open_timeout=10) as ws:
            ws.send(json.dumps(FIRST_MESSAGE[route]))
            assert json.loads(ws.recv(timeout=10))["type"] in ("start", "started")
