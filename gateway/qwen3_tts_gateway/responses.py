"""Turning synthesized audio into HTTP responses: whole files, NDJSON, raw audio streams and SSE."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .backend import AudioChunk
from .encoding import CONTENT_TYPES, encode_audio, pcm16, stream_encoder
from .errors import GatewayError, error_body
from .service import AudioStream, SynthesizedAudio

logger = logging.getLogger(__name__)
T = TypeVar("T")
NDJSON_MEDIA_TYPE = "application/x-ndjson"
SSE_MEDIA_TYPE = "text/event-stream"
# What uvicorn logs (logger "uvicorn.error") for a response that ends without its last body chunk.
UVICORN_INCOMPLETE_RESPONSE = "ASGI callable returned without completing response."
# Set in the request's task when this gateway leaves a response unfinished on purpose; uvicorn logs the
# message above in that same task once the app returns.
_cut_on_purpose: ContextVar[bool] = ContextVar("qwen3_tts_response_cut_on_purpose", default=False)


class CutResponseLogFilter(logging.Filter):
    """Drops uvicorn's "returned without completing response" error for a raw audio stream this gateway cut
    on purpose (the stream's own warning, "stream failed after N chunks", already says why); any other
    incomplete response, a bug, is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == UVICORN_INCOMPLETE_RESPONSE and _cut_on_purpose.get())


def install_cut_response_log_filter() -> None:
    """Once per process, however many apps are created (tests create many)."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, CutResponseLogFilter) for existing in uvicorn_error.filters):
        uvicorn_error.addFilter(CutResponseLogFilter())


class ClientDisconnectedError(GatewayError):
    status_code = 499
    error_type = "client_closed_request"


def audio_headers(
    sample_rate: int, duration_s: float | None = None, finish_reason: str | None = None
) -> dict:
    headers = {"X-Sample-Rate": str(sample_rate)}
    if duration_s is not None:
        headers["X-Audio-Duration"] = f"{duration_s:.3f}"
    if finish_reason is not None:
        headers["X-Finish-Reason"] = finish_reason
    return headers


async def audio_file_response(result: SynthesizedAudio, fmt: str) -> Response:
    body = await asyncio.to_thread(encode_audio, result.audio, result.sample_rate, fmt)
    headers = audio_headers(result.sample_rate, result.duration_s, result.finish_reason)
    return Response(body, media_type=CONTENT_TYPES[fmt], headers=headers)


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it (which cancels the Triton request)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        logger.info("client disconnected from %s; cancelling synthesis", request.url.path)
        raise ClientDisconnectedError("client disconnected")
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its audio stream (cancelling Triton), also when the client
    left before the body started, where the body generator never runs its ``finally``.

    Each early end is logged once: a failure by the stream itself (a warning with its reason), a client
    that left here (info: not a fault of this gateway)."""

    def __init__(self, content: AsyncIterator[bytes], stream: AudioStream, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except GatewayError:
            # A raw audio body failed after its status line, and has no place for an error: returning
            # without the body's last chunk makes the server drop the connection, so the client sees an
            # incomplete body rather than a complete-looking file cut short.
            _cut_on_purpose.set(True)
        finally:
            close: Callable[[], Awaitable[None]] | None = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            await self._stream.aclose()
        if self._stream.cancelled:  # the body ended without an error: the disconnect listener won
            logger.info(
                "client disconnected from %s after %d chunks; synthesis cancelled",
                scope.get("path", "?"),
                self._stream.chunks,
            )


def chunk_message(chunk: AudioChunk) -> dict[str, Any]:
    return {
        "type": "chunk",
        "sequence": chunk.sequence,
        "audio": base64.b64encode(pcm16(chunk.audio)).decode("ascii"),
        "sample_rate": chunk.sample_rate,
        "is_last": chunk.is_last,
        "finish_reason": chunk.finish_reason,
    }


def done_message(stream: AudioStream) -> dict[str, Any]:
    """The summary that ends a stream (NDJSON's last line, the WebSocket's ``done``): the HTTP trailer
    that a chunked response cannot portably send."""
    return {
        "type": "done",
        "finish_reason": stream.finish_reason or "unknown",
        "sample_rate": stream.sample_rate,
        "duration": round(stream.duration_s, 3),
        "chunks": stream.chunks,
    }


async def _ndjson(stream: AudioStream) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield json.dumps(chunk_message(chunk)).encode() + b"\n"
        yield json.dumps(done_message(stream)).encode() + b"\n"
    except GatewayError as exc:  # after the first byte the status is sent: report in-band
        yield json.dumps(exc.body()).encode() + b"\n"
    finally:
        await stream.aclose()


async def _audio_bytes(stream: AudioStream, fmt: str) -> AsyncIterator[bytes]:
    """Encoded bytes as each chunk is produced. The finish reason has no place in raw audio (headers are
    sent first, and chunked trailers are not portable): it goes to the metrics and the log. A failure after
    the first byte is re-raised, so the response ends without its last chunk (an incomplete body)."""
    encoder = stream_encoder(fmt, stream.sample_rate)
    try:
        async for chunk in stream:
            data = encoder.feed(chunk.audio)
            if data:
                yield data
        tail = encoder.finish()
        if tail:
            yield tail
        logger.debug("audio stream finished: %s", stream.finish_reason)
    finally:  # a GatewayError (already logged by the stream) goes on to ClosingStreamingResponse
        await stream.aclose()


def _sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _sse(stream: AudioStream, fmt: str) -> AsyncIterator[bytes]:
    encoder = stream_encoder(fmt, stream.sample_rate)
    try:
        async for chunk in stream:
            data = encoder.feed(chunk.audio)
            if data:
                yield _sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        tail = encoder.finish()
        if tail:
            yield _sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode()})
        usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        yield _sse_event({"type": "speech.audio.done", "usage": usage, "finish_reason": stream.finish_reason})
    except GatewayError as exc:
        yield _sse_event({"type": "error", **error_body(exc.status_code, exc.message, exc.error_type)})
    finally:
        await stream.aclose()


def ndjson_response(stream: AudioStream) -> StreamingResponse:
    return ClosingStreamingResponse(
        _ndjson(stream), stream, media_type=NDJSON_MEDIA_TYPE, headers=audio_headers(stream.sample_rate)
    )


def audio_stream_response(stream: AudioStream, fmt: str) -> StreamingResponse:
    return ClosingStreamingResponse(
        _audio_bytes(stream, fmt),
        stream,
        media_type=CONTENT_TYPES[fmt],
        headers=audio_headers(stream.sample_rate),
    )


def sse_response(stream: AudioStream, fmt: str) -> StreamingResponse:
    headers = {**audio_headers(stream.sample_rate), "Cache-Control": "no-cache"}
    return ClosingStreamingResponse(_sse(stream, fmt), stream, media_type=SSE_MEDIA_TYPE, headers=headers)
