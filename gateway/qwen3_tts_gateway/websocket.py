"""The ``/ws/synthesize`` protocol.

Client -> server (text frames, JSON):
  * a request: the fields of ``WebSocketSynthesizeRequest`` (text, speaker or voice, language, instruct,
    sampling, ``stream_format`` "binary" | "json"); optional ``"type": "synthesize"``;
  * ``{"type": "cancel"}`` while a request streams. Cancel is idempotent: with nothing streaming it is
    ignored once the socket has had a request (it crossed that request's ``done`` or ``error``, so an error
    here would be read as the answer to the next request); on a socket with no request yet it gets an
    ``error`` (422, nothing to cancel). Either way the socket stays open.

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
from .schemas import WebSocketSynthesizeRequest
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

    async def _send_error(self, exc: GatewayError) -> None:
        self._count(exc.status_code)
        self.metrics.errors.labels(ROUTE, exc.error_type).inc()
        await self.ws.send_json(error_message(exc))

    async def _handle(self, message: Message) -> None:
        try:
            body = self._parse(message)
            if body is None:
                return
            stream = await self._open(body)
        except RequestValidationError as exc:
            self._count(422)
            await self.ws.send_json(_ws_error(validation_body(exc.errors())["error"]))
            return
        except GatewayError as exc:
            await self._send_error(exc)
            return
        await self._stream(stream, binary=body.stream_format == "binary")

    def _parse(self, message: Message) -> WebSocketSynthesizeRequest | None:
        """The request; None for a late cancel, which is ignored."""
        text = message.get("text")
        if text is None:
            raise UnprocessableError("send requests as JSON text frames")
        try:
            payload = json.loads(text)
        except ValueError:
            raise UnprocessableError("the message is not valid JSON") from None
        if not isinstance(payload, dict):
            raise UnprocessableError("the message must be a JSON object")
        if payload.get("type") == "cancel":
            if self.late_cancel(ROUTE):
                return None
            raise UnprocessableError("nothing to cancel: no synthesis is running")
        self.had_request = True
        return validate_model(WebSocketSynthesizeRequest, payload)

    async def _open(self, body: WebSocketSynthesizeRequest) -> AudioStream:
        synthesis = await self.service.speech_request(self.owner, body)
        return await self.service.open_stream(synthesis, ROUTE)

    async def _send_chunks(self, stream: AudioStream, binary: bool) -> None:
        await self.ws.send_json(
            {"type": "start", "sample_rate": stream.sample_rate, "format": "pcm_s16le", "channels": 1}
        )
        async for chunk in stream:
            if not binary:
                await self.ws.send_json({"type": "chunk", **chunk_message(chunk)})
            elif len(chunk.audio):
                await self.ws.send_bytes(pcm16(chunk.audio))

    async def _send_done(self, stream: AudioStream, finish_reason: str) -> None:
        await self.ws.send_json(
            {
                "type": "done",
                "finish_reason": finish_reason,
                "sample_rate": stream.sample_rate,
                "duration": round(stream.duration_s, 3),
                "chunks": stream.chunks,
            }
        )

    async def _stream(self, stream: AudioStream, binary: bool) -> None:
        sender = asyncio.ensure_future(self._send_chunks(stream, binary))
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
                    await self._send_done(stream, "cancelled")
                    return
            await self._finish(sender, stream)
        finally:
            if not sender.done():
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            await stream.aclose()

    async def _on_message_while_streaming(self) -> bool:
        """True when the client asked to cancel; raises ClientDisconnected when it left."""
        message = self._take_message()
        try:
            payload = json.loads(message.get("text") or "null")
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("type") == "cancel":
            return True
        busy = UnprocessableError('a request is already streaming; send {"type": "cancel"} first')
        await self.ws.send_json(error_message(busy))
        return False

    async def _finish(self, sender: asyncio.Future[None], stream: AudioStream) -> None:
        error = sender.exception()
        if error is None:
            self._count(200)
            await self._send_done(stream, stream.finish_reason or "unknown")
        elif isinstance(error, GatewayError):
            await self._send_error(error)
        else:
            raise error
