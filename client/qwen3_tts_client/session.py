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
session open (e.g. text over the limit) is logged and kept in ``session.refused``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from .audio import pcm16_to_float
from .errors import APIConnectionError, APITimeoutError, Qwen3TTSError, error_from_response
from .types import AudioChunk

__all__ = ["AsyncSpeechSession", "SessionState", "SpeechSession", "session_start", "websocket_url"]

logger = logging.getLogger(__name__)
SESSION_PATH = "/ws/session"
SESSION_FORMATS = ("pcm", "wav", "mp3", "opus")


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


def _event_error(event: Mapping[str, Any]) -> Qwen3TTSError:
    status = event.get("status")
    status_code = status if isinstance(status, int) else 500
    return error_from_response(status_code, json.dumps({"error": dict(event)}))


@dataclass
class SessionState:
    """The protocol's bookkeeping, shared by the sync and async sessions (no I/O here)."""

    format: str
    started: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    refused: list[Qwen3TTSError] = field(default_factory=list)
    sequence: int = 0

    @property
    def sample_rate(self) -> int:
        return int((self.started or {}).get("sample_rate", 24000))

    def on_open(self, message: str | bytes) -> None:
        """The answer to ``start``: ``started``, or an error to raise."""
        event = self._event(message)
        if event is None or event.get("type") != "started":
            raise (
                _event_error(event)
                if event and event.get("type") == "error"
                else Qwen3TTSError(f"the gateway answered start with {str(message)[:120]!r}")
            )
        self.started = dict(event)

    def on_message(self, message: str | bytes) -> AudioChunk | None:
        """A chunk for audio; None for ``done`` (then ``self.done`` is set) or a refused message."""
        if isinstance(message, bytes):
            return self._chunk(message)
        event = self._event(message)
        kind = event.get("type") if event else None
        if kind == "chunk" and event is not None:
            return self._chunk(base64.b64decode(event.get("audio") or ""))
        if kind == "done" and event is not None:
            self.done = dict(event)
            return None
        if kind == "error" and event is not None:
            error = _event_error(event)
            if event.get("fatal", True):
                raise error
            logger.warning("the gateway refused a message: %s", error)
            self.refused.append(error)
            return None
        raise Qwen3TTSError(f"unexpected session message {str(message)[:120]!r}")

    def _chunk(self, data: bytes) -> AudioChunk:
        audio = pcm16_to_float(data) if self.format == "pcm" else np.zeros(0, np.float32)
        chunk = AudioChunk(self.sequence, audio, self.sample_rate, False, None, data, self.format)
        self.sequence += 1
        return chunk

    @staticmethod
    def _event(message: str | bytes) -> dict[str, Any] | None:
        if isinstance(message, bytes):
            return None
        try:
            event = json.loads(message)
        except ValueError:
            raise Qwen3TTSError(f"the gateway sent a malformed message: {message[:80]!r}") from None
        return event if isinstance(event, dict) else None


def _connection_error(url: str, exc: BaseException) -> Qwen3TTSError:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return APITimeoutError(f"timed out talking to {url}")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):  # the HTTP upgrade was refused
        return error_from_response(status, getattr(exc.response, "body", b"") or b"")  # type: ignore[attr-defined]
    return APIConnectionError(f"could not reach the gateway at {url}: {exc or type(exc).__name__}")


class _SessionBase:
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
        self._start = start
        self._headers = dict(headers or {})
        self._open_timeout = open_timeout
        self._timeout = timeout
        self.state = SessionState(str(start.get("format", "pcm")))

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

    @staticmethod
    def _text(fragment: str) -> str:
        return json.dumps({"type": "text", "text": fragment})

    @staticmethod
    def _control(kind: str, text: str = "") -> str:
        return json.dumps({"type": kind, "text": text} if text else {"type": kind})


class SpeechSession(_SessionBase):
    """A session from a thread: ``with`` opens it (raising the gateway's error if ``start`` is refused)."""

    _ws: Any = None

    def open(self) -> SpeechSession:
        from websockets.exceptions import ConnectionClosed, WebSocketException
        from websockets.sync.client import connect

        try:
            self._ws = connect(
                self.url, additional_headers=self._headers, open_timeout=self._open_timeout, max_size=None
            )
            with contextlib.suppress(ConnectionClosed):  # refused (401): its error event is still to be read
                self._ws.send(json.dumps(self._start))
            self.state.on_open(self._ws.recv(timeout=self._timeout))
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.close()
            raise _connection_error(self.url, exc) from exc
        except BaseException:
            self.close()
            raise
        return self

    def _send(self, message: str) -> None:
        from websockets.exceptions import WebSocketException

        try:
            self._ws.send(message)
        except (OSError, WebSocketException) as exc:
            raise _connection_error(self.url, exc) from exc

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
        self._send(self._control("cancel"))

    def __iter__(self) -> Iterator[AudioChunk]:
        from websockets.exceptions import WebSocketException

        while self.state.done is None:
            try:
                message = self._ws.recv(timeout=self._timeout)
            except (OSError, TimeoutError, WebSocketException) as exc:
                raise _connection_error(self.url, exc) from exc
            chunk = self.state.on_message(message)
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
    """A session from asyncio: ``async with`` opens it."""

    _ws: Any = None

    async def open(self) -> AsyncSpeechSession:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException

        try:
            self._ws = await connect(
                self.url, additional_headers=self._headers, open_timeout=self._open_timeout, max_size=None
            )
            with contextlib.suppress(ConnectionClosed):  # refused (401): its error event is still to be read
                await self._ws.send(json.dumps(self._start))
            self.state.on_open(await self._recv())
        except (OSError, TimeoutError, asyncio.TimeoutError, WebSocketException) as exc:
            await self.aclose()
            raise _connection_error(self.url, exc) from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _recv(self) -> str | bytes:
        return await asyncio.wait_for(self._ws.recv(), self._timeout)

    async def _send(self, message: str) -> None:
        from websockets.exceptions import WebSocketException

        try:
            await self._ws.send(message)
        except (OSError, WebSocketException) as exc:
            raise _connection_error(self.url, exc) from exc

    async def send_text(self, fragment: str) -> None:
        await self._send(self._text(fragment))

    async def flush(self) -> None:
        await self._send(self._control("flush"))

    async def end(self, text: str = "") -> None:
        await self._send(self._control("end", text))

    async def cancel(self) -> None:
        await self._send(self._control("cancel"))

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        from websockets.exceptions import WebSocketException

        while self.state.done is None:
            try:
                message = await self._recv()
            except (OSError, TimeoutError, asyncio.TimeoutError, WebSocketException) as exc:
                raise _connection_error(self.url, exc) from exc
            chunk = self.state.on_message(message)
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
