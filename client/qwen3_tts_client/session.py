"""Voice-agent sessions: send text as it is produced (an LLM's tokens), get audio as it is spoken.

Built on the gateway's ``/ws/session`` WebSocket (gateway/README.md, "Voice-agent sessions") with the
``websockets`` package (imported when a session opens, so the rest of the client does not need it)::

    with client.session(voice="ryan", language="english") as session:
        for token in llm_tokens():
            session.send_text(token)
        session.end()
        for chunk in session:        # or iterate in another thread while sending
            play(chunk.audio)
    session.finish_reason            # stop, length, repetition, idle_timeout or cancelled

Sending and receiving are independent: one thread may send while another iterates (the sync session),
or one task while another iterates (the async one). Iteration ends after the gateway's ``done``. A fatal
``error`` event raises the matching :class:`~.errors.Qwen3TTSError`; a refused message that leaves the
session open (e.g. text over the limit) is logged and kept in ``session.refused``. ``cancel()`` is
idempotent: once the session is over (its ``done`` or fatal error read, or the connection closed) it does
nothing, so a barge-in that races the end of the speech is no error.

``timeout`` is a response timeout (:class:`ResponseClock`): how long the gateway may keep the client waiting
for an answer it owes, never the client's own quiet time.

Every ``start`` carries an id (``session.start_id``, a random hex string unless the start message has one);
the gateway marks the session's events with it (gateway/README.md, "Message ids on WebSockets"), and an event
marked for another start (a stale answer on a reused socket) is ignored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from .audio import pcm16_to_float
from .errors import (
    APIConnectionError,
    APITimeoutError,
    Qwen3TTSError,
    RequestInfo,
    ServiceUnavailableError,
    error_from_response,
)
from .retry import header_value, parse_retry_after
from .types import AudioChunk

__all__ = ["AsyncSpeechSession", "SessionState", "SpeechSession", "session_start", "websocket_url"]

logger = logging.getLogger(__name__)
SESSION_PATH = "/ws/session"
SESSION_FORMATS = ("pcm", "wav", "mp3", "opus")
# WebSocket close codes that mean "the service is restarting, come back": 1012 service restart, 1013 try
# again later.
RESTART_CLOSE_CODES = frozenset({1012, 1013})
_LAST_LOOK_S = 0.001  # the async read's shortest wait: long enough to take a message already received


def websocket_url(base_url: str, path: str = SESSION_PATH) -> str:
    """``http(s)://host/prefix`` → ``ws(s)://host/prefix/ws/session``."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :].rstrip("/") + path
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :].rstrip("/") + path
    return base_url.rstrip("/") + path


def session_start(
    *,
    voice: str,
    language: str | None = None,
    instruct: str | None = None,
    text: str | None = None,
    format: str = "pcm",
    lookahead_tokens: int | None = None,
    json_chunks: bool = False,
    sampling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``start`` message (only the fields that are set: the gateway's defaults apply)."""
    from ._core import sampling_fields

    if format not in SESSION_FORMATS:
        raise ValueError(f"format must be one of {', '.join(SESSION_FORMATS)}")
    message: dict[str, Any] = {"type": "start", "voice": voice, "format": format}
    optional = {
        "language": language,
        "instruct": instruct,
        "text": text,
        "lookahead_tokens": lookahead_tokens,
    }
    message.update({key: value for key, value in optional.items() if value is not None})
    if json_chunks:
        message["stream_format"] = "json"
    message.update(sampling_fields(sampling or {}))
    return message


def _event_error(event: Mapping[str, Any], request: RequestInfo | None) -> Qwen3TTSError:
    status = event.get("status")
    status_code = status if isinstance(status, int) else 500
    error = error_from_response(status_code, json.dumps({"error": dict(event)}))
    error.request = request
    return error


@dataclass
class SessionState:
    """The protocol's bookkeeping, shared by the sync and async sessions (no I/O here)."""

    format: str
    start_id: str | None = None  # the id sent with ``start``; events marked for another one are not ours
    started: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    refused: list[Qwen3TTSError] = field(default_factory=list)
    sequence: int = 0
    failed: bool = False  # a fatal error ended the session
    request: RequestInfo | None = None  # what the session's errors name as their call

    @property
    def over(self) -> bool:
        """The session's ``done`` or fatal error was read: there is nothing left to cancel."""
        return self.done is not None or self.failed

    @property
    def sample_rate(self) -> int:
        return int((self.started or {}).get("sample_rate", 24000))

    def ours(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` belongs to this session: the start id it is marked with (``start_id``, else
        ``id``) is this session's, or it has none (a gateway that sends no ids, or an answer to a message
        sent without one)."""
        mark = event.get("start_id", event.get("id"))
        return mark is None or self.start_id is None or mark == self.start_id

    def _ignored(self, event: Mapping[str, Any]) -> bool:
        if self.ours(event):
            return False
        logger.debug("ignored a %s event marked for another start", str(event.get("type"))[:32])
        return True

    def on_open(self, message: str | bytes) -> bool:
        """The answer to ``start``: ``started`` (True), or an error to raise; False for an event marked for
        another start, which is ignored (the answer is still to come)."""
        event = self._event(message)
        if event is not None and self._ignored(event):
            return False
        if event is None or event.get("type") != "started":
            raise (
                _event_error(event, self.request)
                if event and event.get("type") == "error"
                else Qwen3TTSError(
                    f"the gateway answered start with {str(message)[:120]!r}", request=self.request
                )
            )
        self.started = dict(event)
        return True

    def on_message(self, message: str | bytes) -> AudioChunk | None:
        """A chunk for audio; None for ``done`` (then ``self.done`` is set), a refused message, or an event
        marked for another start (ignored)."""
        if isinstance(message, bytes):
            return self._chunk(message)
        event = self._event(message)
        if event is not None and self._ignored(event):
            return None
        kind = event.get("type") if event else None
        if kind == "chunk" and event is not None:
            return self._chunk(base64.b64decode(event.get("audio") or ""))
        if kind == "done" and event is not None:
            self.done = dict(event)
            return None
        if kind == "error" and event is not None:
            error = _event_error(event, self.request)
            if event.get("fatal", True):
                self.failed = True
                raise error
            logger.warning("the gateway refused a message: %s", error)
            self.refused.append(error)
            return None
        raise Qwen3TTSError(f"unexpected session message {str(message)[:120]!r}", request=self.request)

    def _chunk(self, data: bytes) -> AudioChunk:
        audio = pcm16_to_float(data) if self.format == "pcm" else np.zeros(0, np.float32)
        chunk = AudioChunk(self.sequence, audio, self.sample_rate, False, None, data, self.format)
        self.sequence += 1
        return chunk

    def _event(self, message: str | bytes) -> dict[str, Any] | None:
        if isinstance(message, bytes):
            return None
        try:
            event = json.loads(message)
        except ValueError:
            raise Qwen3TTSError(
                f"the gateway sent a malformed message: {message[:80]!r}", request=self.request
            ) from None
        return event if isinstance(event, dict) else None


class ResponseClock:
    """How long the gateway may keep the client waiting (``timeout`` seconds; None: no limit).

    The clock starts at the first client message the gateway has not answered yet (``start`` included);
    later sends do not restart it, so a gateway that never answers times out even while text keeps going
    out. Any gateway message answers and stops it, except that ``started`` does not answer a ``text`` given
    in ``start`` (its audio is still owed). After ``end`` or ``cancel``, every gap between gateway messages
    counts until ``done``. While nothing is owed there is no deadline: the gateway itself ends a session idle
    both ways (``done``/``idle_timeout``). Sends and reads may come from two threads, hence the lock.
    """

    def __init__(self, timeout: float | None, *, start_has_text: bool) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._owed_since: float | None = None
        self._input_closed = False
        self._start_has_text = start_has_text
        self._messages = 0

    def on_send(self, kind: str) -> None:
        """Before a message goes out (before: an answer read right after the send must stop the clock)."""
        with self._lock:
            if self._owed_since is None:
                self._owed_since = time.monotonic()
            if kind in ("end", "cancel"):
                self._input_closed = True

    def on_message(self) -> None:
        """A gateway message was read: it answers; after ``end``/``cancel`` the next one is owed at once."""
        with self._lock:
            first_fragment_owed = self._messages == 0 and self._start_has_text
            self._messages += 1
            owed = self._input_closed or first_fragment_owed
            self._owed_since = time.monotonic() if owed else None

    def left_s(self) -> float | None:
        """Seconds until the owed answer is late (<= 0: it is); None while nothing is owed or no limit."""
        with self._lock:
            if self._owed_since is None or self.timeout is None:
                return None
            return self._owed_since + self.timeout - time.monotonic()

    def expired_error(self) -> APITimeoutError | None:
        left = self.left_s()
        if left is None or left > 0:
            return None
        return APITimeoutError(f"no answer from the gateway within {self.timeout:g} s")


def _connection_error(request: RequestInfo, exc: BaseException) -> Qwen3TTSError:
    url = request.url
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return APITimeoutError(f"timed out talking to {url}", request=request)
    closed = getattr(exc, "rcvd", None)  # websockets' ConnectionClosed: the close frame the gateway sent
    if getattr(closed, "code", None) in RESTART_CLOSE_CODES:
        # The gateway is restarting or draining (uvicorn closes open sockets with 1012; a draining gateway
        # closes new ones with 1013): a 503 in all but name, which callers handle with the other 503s.
        return ServiceUnavailableError(
            f"the gateway closed the session (code {closed.code}: {closed.reason or 'restarting'}); retry",
            status_code=503,
            request=request,
        )
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):  # the HTTP upgrade was refused: its status, message and Retry-After
        headers = dict(getattr(response, "headers", None) or {})
        error = error_from_response(
            status,
            getattr(response, "body", b"") or b"",
            headers,
            reason=getattr(response, "reason_phrase", "") or "",
            retry_after=parse_retry_after(header_value(headers, "retry-after")),
        )
        error.request = request
        return error
    return APIConnectionError(
        f"could not reach the gateway at {url}: {exc or type(exc).__name__}", request=request
    )


class _SessionBase:
    # While nothing is owed, a read wakes this often to see whether a send from another thread (or task)
    # started the clock: a blocked recv cannot be told.
    idle_poll_s: float = 0.05

    def __init__(
        self,
        url: str,
        start: dict[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        open_timeout: float | None = 10.0,
        timeout: float | None = 120.0,
    ) -> None:
        self.url = url
        self.request = RequestInfo("session", "WS", url)
        # The id of this session's start, which the gateway echoes on every event of the session.
        self.start_id = str(start.get("id") or uuid.uuid4().hex)
        self._start = {**start, "id": self.start_id}
        self._headers = dict(headers or {})
        self._open_timeout = open_timeout
        self._timeout = timeout
        self.state = SessionState(
            str(start.get("format", "pcm")), start_id=self.start_id, request=self.request
        )
        self._clock = ResponseClock(timeout, start_has_text=bool(start.get("text")))

    @property
    def session_id(self) -> str | None:
        return (self.state.started or {}).get("session_id")

    @property
    def sample_rate(self) -> int:
        return self.state.sample_rate

    @property
    def finish_reason(self) -> str | None:
        """stop, length, repetition, idle_timeout or cancelled once the session is done."""
        return (self.state.done or {}).get("finish_reason")

    @property
    def refused(self) -> list[Qwen3TTSError]:
        return self.state.refused

    def _read_wait_s(self) -> float | None:
        """How long the next recv may block: to the deadline, a poll while nothing is owed, None: no limit."""
        if self._timeout is None:
            return None
        left = self._clock.left_s()
        # With a deadline set only this read can move it (sends never restart the clock): wait it out.
        return self.idle_poll_s if left is None else left

    def _outgoing(self, message: dict[str, Any]) -> str:
        self._clock.on_send(str(message["type"]))
        return json.dumps(message)

    def _text(self, fragment: str) -> str:
        return self._outgoing({"type": "text", "text": fragment})

    def _control(self, kind: str, text: str = "") -> str:
        return self._outgoing({"type": kind, "text": text} if text else {"type": kind})


class SpeechSession(_SessionBase):
    """A session from a thread: ``with`` opens it (raising the gateway's error if ``start`` is refused).

    One thread may send while another iterates; ``timeout`` is a response timeout (:class:`ResponseClock`).
    """

    _ws: Any = None

    def open(self) -> SpeechSession:
        from websockets.exceptions import ConnectionClosed, WebSocketException
        from websockets.sync.client import connect

        try:
            self._ws = connect(
                self.url, additional_headers=self._headers, open_timeout=self._open_timeout, max_size=None
            )
            with contextlib.suppress(ConnectionClosed):  # refused (401): its error event is still to be read
                self._ws.send(self._outgoing(self._start))
            while not self.state.on_open(self._recv()):
                pass  # an event for another start: the answer to ours is still to come
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.close()
            raise _connection_error(self.request, exc) from exc
        except BaseException:
            self.close()
            raise
        return self

    def _recv(self) -> str | bytes:
        """The next gateway message; once an owed answer is late, close and raise ``APITimeoutError``."""
        from websockets.exceptions import WebSocketException

        while True:
            wait_s = self._read_wait_s()
            try:
                message: str | bytes = self._ws.recv(timeout=None if wait_s is None else max(wait_s, 0.0))
            except TimeoutError:  # recv(0) still takes a message already received: a slow reader is on time
                late = self._clock.expired_error()
                if late is None:
                    continue
                self.close()
                late.request = self.request
                raise late from None
            except (OSError, WebSocketException) as exc:
                raise _connection_error(self.request, exc) from exc
            self._clock.on_message()
            return message

    def _send(self, message: str) -> None:
        from websockets.exceptions import WebSocketException

        try:
            self._ws.send(message)
        except (OSError, WebSocketException) as exc:
            raise _connection_error(self.request, exc) from exc

    def send_text(self, fragment: str) -> None:
        """Any fragment: a token, a word, a sentence."""
        self._send(self._text(fragment))

    def flush(self) -> None:
        """Speak a partial last word now rather than waiting for the next fragment."""
        self._send(self._control("flush"))

    def end(self, text: str = "") -> None:
        """The text is complete (``text``: an optional last fragment)."""
        self._send(self._control("end", text))

    def cancel(self) -> None:
        """Stop now: the gateway answers ``done`` with ``cancelled``. Once the session is over (its ``done``
        or fatal error read, or the connection closed, which cancels it on the gateway) this does nothing."""
        from websockets.exceptions import ConnectionClosed, WebSocketException

        if self._ws is None or self.state.over:
            return
        try:
            self._ws.send(self._control("cancel"))
        except ConnectionClosed:
            logger.debug("cancel: the session's connection is already closed")
        except (OSError, WebSocketException) as exc:
            raise _connection_error(self.request, exc) from exc

    def __iter__(self) -> Iterator[AudioChunk]:
        while self.state.done is None:
            chunk = self.state.on_message(self._recv())
            if chunk is not None:
                yield chunk

    def collect(self) -> tuple[np.ndarray, int, str | None]:
        """Read the rest of a ``pcm`` session: (samples, sample rate, finish reason)."""
        parts = [chunk.audio for chunk in self]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return audio, self.sample_rate, self.finish_reason

    def close(self) -> None:
        """Close the connection (an unfinished session is cancelled by the gateway)."""
        if self._ws is not None:
            self._ws.close()

    def __enter__(self) -> SpeechSession:
        return self.open() if self._ws is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncSpeechSession(_SessionBase):
    """A session from asyncio: ``async with`` opens it; one task may send while another iterates."""

    _ws: Any = None

    async def open(self) -> AsyncSpeechSession:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException

        try:
            self._ws = await connect(
                self.url, additional_headers=self._headers, open_timeout=self._open_timeout, max_size=None
            )
            with contextlib.suppress(ConnectionClosed):  # refused (401): its error event is still to be read
                await self._ws.send(self._outgoing(self._start))
            while not self.state.on_open(await self._recv()):
                pass  # an event for another start: the answer to ours is still to come
        except (OSError, TimeoutError, asyncio.TimeoutError, WebSocketException) as exc:
            await self.aclose()
            raise _connection_error(self.request, exc) from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _recv(self) -> str | bytes:
        """The next gateway message; once an owed answer is late, close and raise ``APITimeoutError``."""
        from websockets.exceptions import WebSocketException

        while True:
            wait_s = self._read_wait_s()
            # wait_for(..., 0) cancels recv before it runs; a short wait lets a received message through.
            timeout = None if wait_s is None else max(wait_s, _LAST_LOOK_S)
            try:
                message: str | bytes = await asyncio.wait_for(self._ws.recv(), timeout)  # recv: cancel-safe
            except (TimeoutError, asyncio.TimeoutError):
                late = self._clock.expired_error()
                if late is None:
                    continue
                await self.aclose()
                late.request = self.request
                raise late from None
            except (OSError, WebSocketException) as exc:
                raise _connection_error(self.request, exc) from exc
            self._clock.on_message()
            return message

    async def _send(self, message: str) -> None:
        from websockets.exceptions import WebSocketException

        try:
            await self._ws.send(message)
        except (OSError, WebSocketException) as exc:
            raise _connection_error(self.request, exc) from exc

    async def send_text(self, fragment: str) -> None:
        await self._send(self._text(fragment))

    async def flush(self) -> None:
        await self._send(self._control("flush"))

    async def end(self, text: str = "") -> None:
        await self._send(self._control("end", text))

    async def cancel(self) -> None:
        """Stop now; once the session is over this does nothing (see ``SpeechSession.cancel``)."""
        from websockets.exceptions import ConnectionClosed, WebSocketException

        if self._ws is None or self.state.over:
            return
        try:
            await self._ws.send(self._control("cancel"))
        except ConnectionClosed:
            logger.debug("cancel: the session's connection is already closed")
        except (OSError, WebSocketException) as exc:
            raise _connection_error(self.request, exc) from exc

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        while self.state.done is None:
            chunk = self.state.on_message(await self._recv())
            if chunk is not None:
                yield chunk

    async def collect(self) -> tuple[np.ndarray, int, str | None]:
        parts = [chunk.audio async for chunk in self]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return audio, self.sample_rate, self.finish_reason

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> AsyncSpeechSession:
        return await self.open() if self._ws is None else self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
