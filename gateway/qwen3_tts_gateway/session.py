"""The ``/ws/session`` protocol: voice-agent sessions that take text while they speak.

Client -> server (JSON text frames):
  * ``{"type": "start", "voice", "language", "instruct"?, "text"?, "format", "stream_format",
    "lookahead_tokens"?, sampling...}`` opens a session (``SessionStartMessage``);
  * ``{"type": "text", "text": "...", "flush"?: false}`` fragments of any size;
  * ``{"type": "flush"}`` commits a partial last word; ``{"type": "end", "text"?}`` closes the input;
  * ``{"type": "cancel"}`` stops the session now. Cancel is idempotent: with no session open it is ignored
    once the socket has had a ``start`` (it crossed that session's ``done`` or fatal error); before any
    ``start`` it gets a non-fatal ``error``, 422, ``nothing_to_cancel``. The socket stays ready for a
    ``start``.

Server -> client:
  * ``{"type": "started", "session_id", "sample_rate", "format", "stream_format", "voice"}``;
  * audio: binary frames of the encoded stream, or ``{"type": "chunk", "sequence", "format", "audio"}``
    (base64) with ``stream_format: "json"``;
  * ``{"type": "done", "session_id", "finish_reason", "duration", "chunks", "sample_rate", "text_chars"}``
    (``finish_reason``: stop, length, repetition, idle_timeout or cancelled), or
  * ``{"type": "error", "status", "message", "reason", "fatal", "error_type", "param"}``: ``fatal`` true
    means the session is over (no ``done`` follows); false means only that message was refused.

Ids: any client message may carry ``"id"`` (``schemas.ClientMessage``: 1 to 64 of ``A-Za-z0-9._:-``). The
``start``'s id is the session's: ``started``, ``chunk``, ``done`` and the session's own errors (a refused
start, an engine failure) carry it as ``"id"``. An error that answers another message (a refused ``text``,
``no_session``, ``nothing_to_cancel``, ``session_open``) carries that message's id as ``"id"`` and, while a
session is open, the session's as ``"start_id"``. A bad id refuses its message alone (422, ``fatal: false``,
nothing started or ended; the bad id is not echoed). No ids sent, no such keys.

One session at a time per socket; after ``done`` (or a fatal error) another ``start`` may follow. A session
with no traffic either way for ``session_idle_timeout_s`` (no message from the client, no audio to it) is
cancelled with ``done``/``idle_timeout``; a socket with no session and no message for as long gets an
``error`` (408, ``idle_timeout``) and is closed. A disconnect cancels the Triton session at once, which
frees its slot in the engine. gateway/README.md has the full description.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from fastapi import WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from starlette.types import Message

from .backend import AudioChunk, EngineSession, SessionRequest
from .bodies import validate_model
from .encoding import stream_encoder
from .errors import GatewayError, UnprocessableError
from .handlers import validation_body
from .schemas import SessionControlMessage, SessionStartMessage, SessionTextMessage
from .websocket import (
    ClientDisconnected,
    InvalidMessageIdError,
    ReceivingSocket,
    error_message,
    message_id,
    with_ids,
)

logger = logging.getLogger(__name__)
ROUTE = "/ws/session"
SESSION_SAMPLE_RATE = 24_000  # the 12 Hz speech tokenizer's output rate, for every voice
NORMAL_CLOSURE = 1000
_CLOSED_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)
Outcome = Literal["continue", "end", "cancel"]


class SessionRefusedError(UnprocessableError):
    """A message the protocol refuses (422); ``reason`` is a machine-readable code."""

    def __init__(self, message: str, reason: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.reason = reason


class IdleConnectionError(GatewayError):
    status_code = 408
    error_type = "timeout"
    reason = "idle_timeout"


class _Idle(Exception):
    pass


def error_event(exc: GatewayError, *, fatal: bool) -> dict[str, Any]:
    """``error_message`` of /ws/synthesize plus ``reason`` (a code) and ``fatal``."""
    return {**error_message(exc), "reason": getattr(exc, "reason", exc.error_type), "fatal": fatal}


def validation_event(exc: RequestValidationError, *, fatal: bool) -> dict[str, Any]:
    error = validation_body(exc.errors())["error"]
    fields = {key: value for key, value in error.items() if key != "type"}
    return {
        "type": "error",
        **fields,
        "error_type": error["type"],
        "reason": "invalid_request",
        "fatal": fatal,
    }


@dataclass
class SessionStats:
    session_id: str
    start_id: str | None = None  # the client's id of the start: every event of the session carries it
    started: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    first_text_at: float | None = None
    text_chars: int = 0
    chunks: int = 0
    samples: int = 0
    messages: int = 0
    finish_reason: str = ""

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def add_text(self, text: str) -> None:
        self.text_chars += len(text)
        if text and self.first_text_at is None:
            self.first_text_at = time.monotonic()

    def done(self) -> dict[str, Any]:
        done = {
            "type": "done",
            "session_id": self.session_id,
            "finish_reason": self.finish_reason or "unknown",
            "duration": round(self.samples / SESSION_SAMPLE_RATE, 3),
            "chunks": self.chunks,
            "sample_rate": SESSION_SAMPLE_RATE,
            "text_chars": self.text_chars,
        }
        return with_ids(done, self.start_id)


class AgentSessionSocket(ReceivingSocket):
    """Serves one ``/ws/session`` connection (see the module docstring)."""

    @property
    def idle_s(self) -> float:
        return self.settings.session_idle_timeout_s

    async def run(self) -> None:
        try:
            while True:
                start = await self._await_start()
                session = await self._open(start) if start is not None else None
                if start is not None and session is not None:
                    await self._serve(session, start)
        except _Idle:
            await self._close_idle()
        except (ClientDisconnected, *_CLOSED_ERRORS):
            logger.debug("session socket closed")
        finally:
            self._stop_receiving()

    # ---------------------------------------------------------------------------------- receiving

    async def _next_message(self, timeout_s: float) -> Message:
        done, _ = await asyncio.wait({self._receive_task()}, timeout=timeout_s)
        if not done:
            raise _Idle
        return self._take_message()

    @staticmethod
    def _payload(message: Message) -> dict[str, Any]:
        text = message.get("text")
        if text is None:
            raise SessionRefusedError("send messages as JSON text frames", "protocol")
        try:
            payload = json.loads(text)
        except ValueError:
            raise SessionRefusedError("the message is not valid JSON", "protocol") from None
        if not isinstance(payload, dict):
            raise SessionRefusedError("the message must be a JSON object", "protocol")
        return payload

    # ---------------------------------------------------------------------------------- sending

    def _count(self, status: int) -> None:
        self.metrics.requests.labels(ROUTE, "WS", str(status)).inc()

    async def _send_error(
        self, exc: GatewayError, *, fatal: bool, answers: str | None = None, start_id: str | None = None
    ) -> None:
        """``answers``: the id of the message refused; ``start_id``: the open session's (see ``with_ids``)."""
        self.metrics.errors.labels(ROUTE, exc.error_type).inc()
        if fatal:
            self._count(exc.status_code)
        await self.ws.send_json(with_ids(error_event(exc, fatal=fatal), answers, start_id))

    async def _send_invalid(
        self,
        exc: RequestValidationError,
        *,
        fatal: bool,
        answers: str | None = None,
        start_id: str | None = None,
    ) -> None:
        self.metrics.errors.labels(ROUTE, "invalid_request_error").inc()
        if fatal:
            self._count(422)
        await self.ws.send_json(with_ids(validation_event(exc, fatal=fatal), answers, start_id))

    async def _close_idle(self) -> None:
        error = IdleConnectionError(f"no message for {self.idle_s:g} s; closing the connection")
        try:
            await self._send_error(error, fatal=True)
            await self.ws.close(code=NORMAL_CLOSURE, reason="idle timeout")
        except _CLOSED_ERRORS:
            pass

    # ---------------------------------------------------------------------------------- opening

    async def _await_start(self) -> SessionStartMessage | None:
        message = await self._next_message(self.idle_s)
        answers: str | None = None  # the client's id of this message, once read
        try:
            payload = self._payload(message)
            kind = payload.get("type")
            if kind == "start":
                self.had_request = True
            answers = message_id(payload)
            if kind == "cancel":
                if not self.late_cancel(ROUTE):  # before any start: only that message is refused
                    refused = SessionRefusedError(
                        "nothing to cancel: no session is open", "nothing_to_cancel"
                    )
                    await self._send_error(refused, fatal=False, answers=answers)
                return None
            if kind != "start":
                raise SessionRefusedError('no open session: send {"type": "start", ...} first', "no_session")
            return validate_model(SessionStartMessage, payload)
        except InvalidMessageIdError as exc:  # that message alone is refused: nothing started or ended
            await self._send_invalid(exc, fatal=False)
        except RequestValidationError as exc:
            await self._send_invalid(exc, fatal=True, answers=answers)
        except GatewayError as exc:
            await self._send_error(exc, fatal=True, answers=answers)
        return None

    async def _open(self, start: SessionStartMessage) -> EngineSession | None:
        try:
            synthesis = await self.service.speech_request(self.owner, start)
            return await self.service.open_session(SessionRequest(synthesis, start.lookahead_tokens))
        except RequestValidationError as exc:
            await self._send_invalid(exc, fatal=True, answers=start.id)
        except GatewayError as exc:
            await self._send_error(exc, fatal=True, answers=start.id)
        return None

    # ---------------------------------------------------------------------------------- a session

    async def _serve(self, session: EngineSession, start: SessionStartMessage) -> None:
        stats = SessionStats(session.session_id, start.id)
        self._add_text(stats, start.text)
        self.metrics.active_sessions.inc()
        logger.info("session %s opened (voice %s, %s)", session.session_id, start.voice, start.format)
        sender: asyncio.Future[None] | None = None
        try:
            started = {
                "type": "started",
                "session_id": session.session_id,
                "sample_rate": SESSION_SAMPLE_RATE,
                "format": start.format,
                "stream_format": start.stream_format,
                "voice": start.voice,
            }
            await self.ws.send_json(with_ids(started, start.id))
            sender = asyncio.ensure_future(self._send_audio(session, start, stats))
            if await self._converse(session, sender, stats) and sender.done():
                await self._finish(sender, stats)
        finally:
            with anyio.CancelScope(shield=True):  # also when the handler itself is cancelled (shutdown)
                if sender is not None:
                    await _stop(sender)
                await session.aclose()
            self.metrics.active_sessions.dec()
            if stats.finish_reason:
                self.metrics.finish_reasons.labels(ROUTE, stats.finish_reason).inc()
            logger.info("session %s closed: %s", session.session_id, stats.finish_reason or "error")

    async def _converse(
        self, session: EngineSession, sender: asyncio.Future[None], stats: SessionStats
    ) -> bool:
        """Relay the client's messages until the audio ends (True) or the session was stopped here."""
        input_open = True
        while not sender.done():
            receiver = self._receive_task()
            idle_left = self.idle_s - (time.monotonic() - stats.last_activity)
            await asyncio.wait(
                {sender, receiver},
                timeout=max(idle_left, 0.0) if input_open else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if sender.done():
                break
            if receiver.done():
                stats.touch()
                outcome = await self._on_message(self._take_message(), session, stats)
                input_open = input_open and outcome == "continue"
                if outcome == "cancel":
                    await self._stop_session(session, sender, stats, "cancelled")
                    return False
            elif time.monotonic() - stats.last_activity >= self.idle_s:
                logger.info("session %s idle for %g s", session.session_id, self.idle_s)
                await self._stop_session(session, sender, stats, "idle_timeout")
                return False
        return True

    async def _stop_session(
        self, session: EngineSession, sender: asyncio.Future[None], stats: SessionStats, reason: str
    ) -> None:
        await _stop(sender)
        await session.aclose()  # cancels the Triton request: the engine frees the slot now
        stats.finish_reason = reason
        self._count(499 if reason == "cancelled" else 408)
        await self.ws.send_json(stats.done())

    async def _on_message(self, message: Message, session: EngineSession, stats: SessionStats) -> Outcome:
        """Apply one message; a refusal carries its id (``id``) and the session's (``start_id``)."""
        answers: str | None = None
        try:
            payload = self._payload(message)
            answers = message_id(payload)
            return await self._apply(payload, session, stats)
        except RequestValidationError as exc:
            await self._send_invalid(exc, fatal=False, answers=answers, start_id=stats.start_id)
        except GatewayError as exc:
            await self._send_error(exc, fatal=False, answers=answers, start_id=stats.start_id)
        return "continue"

    async def _apply(self, payload: dict[str, Any], session: EngineSession, stats: SessionStats) -> Outcome:
        kind = payload.get("type")
        if kind == "text":
            fragment = validate_model(SessionTextMessage, payload)
            self._check_budget(stats, fragment.text)
            await session.send_text(fragment.text, flush=fragment.flush)
            self._add_text(stats, fragment.text)
            return "continue"
        if kind in ("flush", "end", "cancel"):
            control = validate_model(SessionControlMessage, payload)
            if kind == "cancel":
                return "cancel"
            self._check_budget(stats, control.text)
            if kind == "flush":
                await session.send_text(control.text, flush=True)
            else:
                await session.end(control.text)
            self._add_text(stats, control.text)
            return "end" if kind == "end" else "continue"
        if kind == "start":
            raise SessionRefusedError("a session is already open; end or cancel it first", "session_open")
        raise SessionRefusedError(
            f"unknown message type {str(kind)[:32]!r}; expected text, flush, end or cancel", "protocol"
        )

    def _add_text(self, stats: SessionStats, text: str) -> None:
        stats.add_text(text)
        self.metrics.session_text_chars.inc(len(text))

    def _check_budget(self, stats: SessionStats, text: str) -> None:
        limit = self.settings.max_text_length
        if stats.text_chars + len(text) > limit:
            raise SessionRefusedError(
                f"the session's text would exceed {limit} characters; end it and start another",
                "text_too_long",
                param="text",
            )

    async def _send_audio(
        self, session: EngineSession, start: SessionStartMessage, stats: SessionStats
    ) -> None:
        encoder = stream_encoder(start.format, SESSION_SAMPLE_RATE)
        async for chunk in session:
            self._account(chunk, stats)
            await self._emit(encoder.feed(chunk.audio), start, stats)
        await self._emit(encoder.finish(), start, stats)

    def _account(self, chunk: AudioChunk, stats: SessionStats) -> None:
        if stats.samples == 0 and len(chunk.audio) and stats.first_text_at is not None:
            self.metrics.time_to_first_audio.labels(ROUTE).observe(time.monotonic() - stats.first_text_at)
        stats.chunks += 1
        stats.samples += len(chunk.audio)
        if chunk.is_last:
            stats.finish_reason = chunk.finish_reason or "stop"

    async def _emit(self, data: bytes, start: SessionStartMessage, stats: SessionStats) -> None:
        if not data:
            return
        if start.stream_format == "binary":
            await self.ws.send_bytes(data)
        else:
            audio = base64.b64encode(data).decode("ascii")
            chunk = {"type": "chunk", "sequence": stats.messages, "format": start.format, "audio": audio}
            await self.ws.send_json(with_ids(chunk, start.id))
        stats.messages += 1
        stats.touch()

    async def _finish(self, sender: asyncio.Future[None], stats: SessionStats) -> None:
        error = sender.exception()
        if error is None:
            self._count(200)
            self.metrics.audio_seconds.labels(ROUTE).inc(stats.samples / SESSION_SAMPLE_RATE)
            await self.ws.send_json(stats.done())
        elif isinstance(error, GatewayError):
            stats.finish_reason = ""
            await self._send_error(error, fatal=True, answers=stats.start_id)
        else:
            raise error


async def _stop(task: asyncio.Future[None]) -> None:
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
