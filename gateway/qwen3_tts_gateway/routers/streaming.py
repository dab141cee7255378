"""Streaming synthesis over HTTP (NDJSON or raw audio) and over a WebSocket."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import StreamingResponse

from ..auth import OwnerDep, websocket_owner
from ..bodies import JSON_BODY
from ..deps import ServiceDep, SettingsDep
from ..errors import AuthenticationError, GatewayError
from ..middleware import route_label
from ..responses import (
    NDJSON_MEDIA_TYPE,
    audio_stream_response,
    cancel_on_disconnect,
    ndjson_response,
)
from ..schemas import StreamSynthesizeRequest
from ..session import AgentSessionSocket, error_event
from ..websocket import WebSocketSession, error_message, reject_websocket

router = APIRouter(tags=["streaming"])
ws_router = APIRouter()

_STREAM_RESPONSES = {
    200: {
        "description": "NDJSON lines {type: chunk, sequence, audio (base64 PCM s16le), sample_rate, is_last, "
        "finish_reason}, then a last line {type: done, finish_reason, sample_rate, duration, chunks}; or raw "
        "audio bytes (pcm, wav, mp3, opus) as they are encoded, with stream_format=audio. An error after "
        'the first line arrives as a line {"error": {...}}; a raw audio stream that fails after its first '
        "byte ends without its last chunk (an incomplete body, not a complete file).",
        "content": {
            NDJSON_MEDIA_TYPE: {},
            "audio/pcm": {},
            "audio/wav": {},
            "audio/mpeg": {},
            "audio/ogg; codecs=opus": {},
        },
    }
}


@router.post(
    "/synthesize/stream",
    response_class=StreamingResponse,
    responses=_STREAM_RESPONSES,
    summary="Stream speech in a timbre as it is generated",
    dependencies=JSON_BODY,
)
async def synthesize_stream(
    body: StreamSynthesizeRequest,
    request: Request,
    owner: OwnerDep,
    service: ServiceDep,
    settings: SettingsDep,
) -> StreamingResponse:
    synthesis = await service.speech_request(owner, body)
    stream = await cancel_on_disconnect(request, service.open_stream(synthesis, route_label(request.scope)))
    if body.stream_format == "ndjson":
        return ndjson_response(stream)
    return audio_stream_response(stream, body.response_format)


async def _accept_with_owner(
    websocket: WebSocket, error_event: Callable[[GatewayError], dict[str, Any]]
) -> str | None:
    """Accept the socket and return the caller's key owner. A missing or wrong key gets the route's usual
    error event (``error_event``), then a 1008 close, and gives None."""
    await websocket.accept()
    try:
        return websocket_owner(websocket, websocket.app.state.settings)
    except AuthenticationError as exc:
        await reject_websocket(websocket, error_event(exc))
        return None


@ws_router.websocket("/ws/synthesize")
async def synthesize_websocket(websocket: WebSocket) -> None:
    """Real-time synthesis; the message protocol is described in :mod:`qwen3_tts_gateway.websocket`."""
    state = websocket.app.state
    owner = await _accept_with_owner(websocket, error_message)
    if owner is None:
        return
    await WebSocketSession(websocket, state.service, state.settings, state.metrics, owner).run()


@ws_router.websocket("/ws/session")
async def session_websocket(websocket: WebSocket) -> None:
    """Voice-agent sessions: text in while audio comes out (protocol: :mod:`qwen3_tts_gateway.session`)."""
    state = websocket.app.state
    owner = await _accept_with_owner(websocket, partial(error_event, fatal=True))
    if owner is None:
        return
    await AgentSessionSocket(websocket, state.service, state.settings, state.metrics, owner).run()
