"""The built-in timbres and languages."""

from __future__ import annotations

from fastapi import APIRouter

from ..catalog import LANGUAGES, SPEAKERS
from ..schemas import LanguageInfo, LanguagesResponse, SpeakerInfo, SpeakersResponse

router = APIRouter(tags=["catalog"])


@router.get("/speakers", response_model=SpeakersResponse, summary="The 9 built-in timbres")
async def speakers() -> SpeakersResponse:
    return SpeakersResponse(
        speakers=[
            SpeakerInfo(
                name=s.name, description=s.description, native_language=s.native_language, dialect=s.dialect
            )
            for s in SPEAKERS.values()
        ]
    )


@router.get("/languages", response_model=LanguagesResponse, summary="Supported languages")
async def languages() -> LanguagesResponse:
    return LanguagesResponse(
        languages=[
            LanguageInfo(code=lang.code, name=lang.name, iso_639_1=lang.iso_639_1)
            for lang in LANGUAGES.values()
        ]
    )
