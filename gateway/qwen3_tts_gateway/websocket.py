"""The ``/ws/synthesize`` protocol.

Client -> server (text frames, JSON):
  * a request: the fields of ``WebSocketSynthesizeRequest`` (text, speaker or voice, language, instruct,
    sampling, ``stream_format`` "binary" | "json"); optional ``"type": "synthesize"``;
  * ``{"type": "cancel"}`` while a request streams. Cancel is idempotent: with nothing streaming it is
    ignored once the socket has had a request (it crossed that request's ``done`` or ``error``, so an error
    here would be read as the answer to the next request); on a socket with no request yet it gets an
    ``error`` (422, nothing to cancel). Either way the socket stays open.

Any message may carry ``"id"`` (``schemas.ClientMessage``: 1 to 64 of ``A-Za-z0-9._:-``): every JSON event
of that request (start, chunk, done, error) carries it back as ``"id"``, as does the error a cancel may get;
binary frames cannot. A bad id refuses its message (422, no id echoed); no id, no ``id`` key.

Server -> client, per request:
  * ``{"type": "start", "sample_rate": 24000, "format": "pcm_s16le", "channels": 1}`` once the first
    chunk exists (so every error status is known before any audio);
  * audio: binary frames of raw PCM s16le mono (``binary``), or
    ``{"type": "chunk", "sequence", "audio" (base64 PCM s16le), "sample_rate", "is_last", "finish_reason"}``;
  * then ``{"type": "done", "finish_reason", "sample_rate", "duration", "chunks"}``
    (``finish_reason`` "cancelled" after a cancel), or
    ``{"type": "error", "status", "message", "error_type", "param"[, "errors"]}``.

The socket stays open for further requests. A disconnect cancels the Triton request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from starlette.types import Message

from qwen3_tts_serving.settings import Settings

from .bodies import validate_model
from .encoding import pcm16
from .errors import GatewayError, UnprocessableError
from .handlers import validation_body
from .metrics import GatewayMetrics
from .responses import chunk_message
from .schemas import ClientMessage, WebSocketSynthesizeRequest
from .service import AudioStream, SynthesisService

logger = logging.getLogger(__name__)
ROUTE = "/ws/synthesize"
POLICY_VIOLATION = 1008
_MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code
_CLOSED_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


def _ws_error(error: dict[str, Any]) -> dict[str, Any]:
    """An HTTP error body as a WebSocket event: its ``type`` moves to ``error_type``."""
    fields = {key: value for key, value in error.items() if key != "type"}
    return {"type": "error", **fields, "error_type": error["type"]}


def error_message(exc: GatewayError) -> dict[str, Any]:
    return _ws_error(exc.body()["error"])


class InvalidMessageIdError(RequestValidationError):
    """A message's ``id`` breaks ``schemas.MessageId``'s rule: the message is refused before anything else of
    it is read, and the bad id is not echoed."""


def message_id(payload: dict[str, Any]) -> str | None:
    """The client's ``id`` of a message (None when it has none); InvalidMessageIdError for a bad one."""
    try:
        return validate_model(ClientMessage, {"id": payload.get("id")}).id
    except RequestValidationError as exc:
        raise InvalidMessageIdError(exc.errors()) from None


def with_ids(event: dict[str, Any], answers: str | None, start_id: str | None = None) -> dict[str, Any]:
    """``event`` plus the client's ids that are set: ``id`` of the message it answers, ``start_id`` of the
    session's ``start`` (/ws/session). A client that sends no ids gets the event as it was."""
    ids = {"id": answers, "start_id": start_id}
    return {**event, **{key: value for key, value in ids.items() if value is not None}}


def json_object(message: Message) -> dict[str, Any]:
    """A client message as the JSON object it must be (UnprocessableError otherwise)."""
    text = message.get("text")
    if text is None:
        raise UnprocessableError("send requests as JSON text frames")
    try:
        payload = json.loads(text)
    except ValueError:
        raise UnprocessableError("the message is not valid JSON") from None
    if not isinstance(payload, dict):
        raise UnprocessableError("the message must be a JSON object")
    return payload


async def reject_websocket(websocket: WebSocket, event: dict[str, Any]) -> None:
    """Send the error ``event``, then close with 1008 and its message as the reason (clients that only
    see the close still learn why)."""
    await websocket.send_json(event)
    reason = str(event.get("message", "")).encode("utf-8")[:_MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
    await websocket.close(code=POLICY_VIOLATION, reason=reason)


class ClientDisconnected(Exception):
    pass


class ReceivingSocket:
    """One outstanding ``ws.receive()`` at a time, shared by the two WebSocket protocols: the same future
    serves waiting for the next message and noticing a disconnect while audio is being sent."""

    def __init__(
        self,
        websocket: WebSocket,
        service: SynthesisService,
        settings: Settings,
        metrics: GatewayMetrics,
        owner: str,
    ) -> None:
        self.ws = websocket
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self._receiver: asyncio.Future[Message] | None = None
        # Set at the first request (or session start): from then on a cancel with nothing running crossed the
        # end of what it targeted, and is ignored (see late_cancel).
        self.had_request = False

    def _receive_task(self) -> asyncio.Future[Message]:
        if self._receiver is None:
            self._receiver = asyncio.ensure_future(self.ws.receive())
        return self._receiver

    def _take_message(self) -> Message:
        assert self._receiver is not None
        message, self._receiver = self._receiver.result(), None
        if message["type"] == "websocket.disconnect":
            raise ClientDisconnected
        return message

    def late_cancel(self, route: str) -> bool:
        """Whether a cancel with nothing running is to be ignored: true once the socket has had a request,
        since ended (its "done" or error crossed the cancel, or an earlier cancel stopped it). Cancel is
        idempotent; an error here would reach a client that reuses the socket as the answer to its next
        request. Only a socket that never ran anything is told there was nothing to cancel."""
        if self.had_request:
            logger.debug("%s: ignored a cancel that came after the last request ended", route)
        return self.had_request

    def _stop_receiving(self) -> None:
        if self._receiver is not None and not self._receiver.done():
            self._receiver.cancel()


class WebSocketSession(ReceivingSocket):
    async def run(self) -> None:
        try:
            while True:
                await self._handle(await self._next_message())
        except (ClientDisconnected, *_CLOSED_ERRORS):
            logger.debug("websocket closed")
        finally:
            self._stop_receiving()

    async def _next_message(self) -> Message:
        await self._receive_task()
        return self._take_message()

    def _count(self, status: int) -> None:
        self.metrics.requests.labels(ROUTE, "WS", str(status)).inc()

    async def _send_error(self, exc: GatewayError, request_id: str | None) -> None:
        self._count(exc.status_code)
        self.metrics.errors.labels(ROUTE, exc.error_type).inc()
        await self.ws.send_json(with_ids(error_message(exc), request_id))

    @staticmethod
    def _invalid(exc: RequestValidationError, request_id: str | None) -> dict[str, Any]:
        return with_ids(_ws_error(validation_body(exc.errors())["error"]), request_id)

    async def _handle(self, message: Message) -> None:
        request_id: str | None = None  # the client's id of this message, once read
        try:
            payload = json_object(message)
            request_id = message_id(payload)
            body = self._parse(payload)
            if body is None:
                return
            stream = await self._open(body)
        except RequestValidationError as exc:
            self._count(422)
            await self.ws.send_json(self._invalid(exc, request_id))
            return
        except GatewayError as exc:
            await self._send_error(exc, request_id)
            return
        await self._stream(stream, binary=body.stream_format == "binary", request_id=request_id)

    def _parse(self, payload: dict[str, Any]) -> WebSocketSynthesizeRequest | None:
        """The request; None for a late cancel, which is ignored."""
        if payload.get("type") == "cancel":
            if self.late_cancel(ROUTE):
                return None
            raise UnprocessableError("nothing to cancel: no synthesis is running")
        self.had_request = True
        return validate_model(WebSocketSynthesizeRequest, payload)

    async def _open(self, body: WebSocketSynthesizeRequest) -> AudioStream:
        synthesis = await self.service.speech_request(self.owner, body)
        return await self.service.open_stream(synthesis, ROUTE)

    async def _send_chunks(self, stream: AudioStream, binary: bool, request_id: str | None) -> None:
        start = {"type": "start", "sample_rate": stream.sample_rate, "format": "pcm_s16le", "channels": 1}
        await self.ws.send_json(with_ids(start, request_id))
        async for chunk in stream:
            if not binary:
                await self.ws.send_json(with_ids({"type": "chunk", **chunk_message(chunk)}, request_id))
            elif len(chunk.audio):
                await self.ws.send_bytes(pcm16(chunk.audio))  # a binary frame has no room for the id

    async def _send_done(self, stream: AudioStream, finish_reason: str, request_id: str | None) -> None:
        done = {
            "type": "done",
            "finish_reason": finish_reason,
            "sample_rate": stream.sample_rate,
            "duration": round(stream.duration_s, 3),
            "chunks": stream.chunks,
        }
        await self.ws.send_json(with_ids(done, request_id))

    async def _stream(self, stream: AudioStream, binary: bool, request_id: str | None) -> None:
        sender = asyncio.ensure_future(self._send_chunks(stream, binary, request_id))
        try:
            while True:
                receiver = self._receive_task()
                await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if sender.done():
                    break  # a message that arrived meanwhile stays queued for the next request
                if await self._on_message_while_streaming():
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
                    self._count(499)
                    await self._send_done(stream, "cancelled", request_id)
                    return
            await self._finish(sender, stream, request_id)
        finally:
            if not sender.done():
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            await stream.aclose()

    async def _on_message_while_streaming(self) -> bool:
        """True when the client asked to cancel; raises ClientDisconnected when it left. Anything else is
        refused, the error carrying that message's id (not the streaming request's)."""
        message = self._take_message()
        try:
            payload = json.loads(message.get("text") or "null")
        except ValueError:
            payload = None
        answers = None
        if isinstance(payload, dict):
            try:
                answers = message_id(payload)
            except InvalidMessageIdError as exc:
                await self.ws.send_json(self._invalid(exc, None))
                return False
            if payload.get("type") == "cancel":
                return True
        busy = UnprocessableError('a request is already streaming; send {"type": "cancel"} first')
        await self.ws.send_json(with_ids(error_message(busy), answers))
        return False

    async def _finish(
        self, sender: asyncio.Future[None], stream: AudioStream, request_id: str | None
    ) -> None:
        error = sender.exception()
        if error is None:
            self._count(200)
            await self._send_done(stream, stream.finish_reason or "unknown", request_id)
        elif isinstance(error, GatewayError):
            await self._send_error(error, request_id)
        else:
            raise error
