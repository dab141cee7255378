"""Whole-file synthesis: built-in timbres or library voices, voice design, one-off cloning."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..auth import OwnerDep
from ..backend import SynthesisRequest
from ..bodies import JSON_BODY, audio_body_openapi, audio_limits, check_text_lengths, read_audio_body
from ..deps import ServiceDep, SettingsDep
from ..encoding import CONTENT_TYPES
from ..middleware import route_label
from ..refaudio import decode_reference
from ..responses import audio_file_response, cancel_on_disconnect
from ..schemas import CloneFields, CloneJsonRequest, DesignRequest, SynthesizeRequest
from ..service import sampling_of

router = APIRouter(tags=["synthesis"])

AUDIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The audio file; headers X-Sample-Rate, X-Audio-Duration (s), X-Finish-Reason.",
        "content": {media_type: {} for media_type in CONTENT_TYPES.values()},
    }
}


@router.post(
    "/synthesize",
    response_class=Response,
    responses=AUDIO_RESPONSES,
    summary="Speak in a timbre",
    dependencies=JSON_BODY,
)
async def synthesize(
    body: SynthesizeRequest, request: Request, owner: OwnerDep, service: ServiceDep, settings: SettingsDep
) -> Response:
    synthesis = await service.speech_request(owner, body)
    result = await cancel_on_disconnect(request, service.synthesize(synthesis, route_label(request.scope)))
    return await audio_file_response(result, body.response_format)


@router.post(
    "/design",
    response_class=Response,
    responses=AUDIO_RESPONSES,
    summary="Speak in a described voice",
    dependencies=JSON_BODY,
)
async def design(
    body: DesignRequest, request: Request, service: ServiceDep, settings: SettingsDep
) -> Response:
    check_text_lengths(settings.max_text_length, text=body.text, instruct=body.instruct)
    synthesis = SynthesisRequest(
        "voice_design", body.text, body.language, instruct=body.instruct, sampling=sampling_of(body)
    )
    result = await cancel_on_disconnect(request, service.synthesize(synthesis, route_label(request.scope)))
    return await audio_file_response(result, body.response_format)


@router.post(
    "/clone",
    response_class=Response,
    responses=AUDIO_RESPONSES,
    summary="Speak in the voice of a reference clip (JSON with base64, or multipart)",
    openapi_extra=audio_body_openapi(CloneJsonRequest, CloneFields),
)
async def clone(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    body, data = await read_audio_body(request, CloneFields, settings.max_upload_bytes)
    check_text_lengths(settings.max_text_length, text=body.text, ref_text=body.ref_text)
    reference = await asyncio.to_thread(decode_reference, data, audio_limits(settings))
    synthesis = SynthesisRequest(
        "voice_clone",
        body.text,
        body.language,
        ref_audio=reference.samples,
        ref_sample_rate=reference.sample_rate,
        ref_text=body.ref_text or None,
        x_vector_only=body.x_vector_only,
        sampling=sampling_of(body),
    )
    result = await cancel_on_disconnect(request, service.synthesize(synthesis, route_label(request.scope)))
    return await audio_file_response(result, body.response_format)
