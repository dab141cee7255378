"""OpenAI-compatible ``POST /v1/audio/speech``: code written for the OpenAI SDK works unchanged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..auth import OwnerDep
from ..bodies import JSON_BODY
from ..deps import ServiceDep, SettingsDep
from ..encoding import STREAMABLE_FORMATS
from ..middleware import route_label
from ..responses import audio_file_response, audio_stream_response, cancel_on_disconnect, sse_response
from ..schemas import SpeechRequest
from .synthesis import AUDIO_RESPONSES

router = APIRouter(prefix="/v1", tags=["openai"])
# Sent as they are produced (wav with a streaming header); flac needs the whole utterance.
_PROGRESSIVE_FORMATS = STREAMABLE_FORMATS


@router.post(
    "/audio/speech",
    response_class=Response,
    responses=AUDIO_RESPONSES,
    summary="OpenAI speech",
    dependencies=JSON_BODY,
)
async def create_speech(
    body: SpeechRequest, request: Request, owner: OwnerDep, service: ServiceDep, settings: SettingsDep
) -> Response:
    synthesis = await service.speech_request(owner, body)
    route = route_label(request.scope)
    if body.stream_format == "sse":
        stream = await cancel_on_disconnect(request, service.open_stream(synthesis, route))
        return sse_response(stream, body.response_format)
    if body.response_format in _PROGRESSIVE_FORMATS:
        stream = await cancel_on_disconnect(request, service.open_stream(synthesis, route))
        return audio_stream_response(stream, body.response_format)
    result = await cancel_on_disconnect(request, service.synthesize(synthesis, route))
    return await audio_file_response(result, body.response_format)
