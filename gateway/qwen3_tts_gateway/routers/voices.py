"""The voice library: store a cloned voice once, then synthesize with ``voice: qwen3-clone-<id>``."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from ..auth import OwnerDep
from ..bodies import audio_body_openapi, audio_limits, check_text_lengths, read_audio_body
from ..catalog import clone_voice_id
from ..deps import ServiceDep, SettingsDep, VoiceStoreDep
from ..errors import NotFoundError
from ..refaudio import decode_reference
from ..schemas import VOICE_ID_SCHEMA, VoiceCreateFields, VoiceCreateJsonRequest, VoiceInfo, VoiceList
from ..voices import VoiceRecord

router = APIRouter(prefix="/voices", tags=["voices"])
_NOT_FOUND = {404: {"description": "No such voice for this API key."}}
# Any other string is a 404 like an unknown id; the pattern tells clients the form of an id.
VoiceId = Annotated[str, Path(description="The id or 'qwen3-clone-<id>'.", json_schema_extra=VOICE_ID_SCHEMA)]


def voice_info(record: VoiceRecord) -> VoiceInfo:
    return VoiceInfo(
        id=record.id,
        voice=record.voice,
        name=record.name,
        ref_text=record.ref_text,
        x_vector_only=record.x_vector_only,
        duration_s=round(record.duration_s, 3),
        created_at=record.created_at,
    )


def _not_found(voice_id: str) -> NotFoundError:
    return NotFoundError(f"voice {voice_id[:64]!r} not found for this API key", param="voice_id")


def _voice_id(value: str) -> str:
    """Accept the bare id or the ``qwen3-clone-<id>`` voice name."""
    return clone_voice_id(value.lower()) or value.lower()


@router.post(
    "",
    status_code=201,
    response_model=VoiceInfo,
    summary="Store a cloned voice (reference audio encoded once by Triton's voice_prompt model)",
    openapi_extra=audio_body_openapi(VoiceCreateJsonRequest, VoiceCreateFields),
)
async def create_voice(
    request: Request, owner: OwnerDep, service: ServiceDep, settings: SettingsDep
) -> VoiceInfo:
    body, data = await read_audio_body(request, VoiceCreateFields, settings.max_upload_bytes)
    check_text_lengths(settings.max_text_length, ref_text=body.ref_text)
    reference = await asyncio.to_thread(decode_reference, data, audio_limits(settings))
    record = await service.create_voice(
        owner=owner,
        reference=reference,
        ref_text=body.ref_text or None,
        x_vector_only=body.x_vector_only,
        name=body.name,
    )
    return voice_info(record)


@router.get("", response_model=VoiceList, summary="The voices of this API key")
async def list_voices(owner: OwnerDep, store: VoiceStoreDep) -> VoiceList:
    return VoiceList(voices=[voice_info(record) for record in await store.list_owned(owner)])


@router.get("/{voice_id}", response_model=VoiceInfo, responses=_NOT_FOUND, summary="One voice")
async def get_voice(voice_id: VoiceId, owner: OwnerDep, store: VoiceStoreDep) -> VoiceInfo:
    record = await store.get(owner, _voice_id(voice_id))
    if record is None:
        raise _not_found(voice_id)
    return voice_info(record)


@router.delete("/{voice_id}", status_code=204, responses=_NOT_FOUND, summary="Delete a voice")
async def delete_voice(voice_id: VoiceId, owner: OwnerDep, store: VoiceStoreDep) -> Response:
    if not await store.delete(owner, _voice_id(voice_id)):
        raise _not_found(voice_id)
    return Response(status_code=204)
