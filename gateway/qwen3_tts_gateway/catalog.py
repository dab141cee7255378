"""The fixed choices of the API: the 9 built-in timbres, the languages and the output formats."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Speaker:
    name: str
    description: str
    native_language: str
    dialect: str | None = None


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    iso_639_1: str | None


SPEAKERS: dict[str, Speaker] = {
    s.name: s
    for s in (
        Speaker("serena", "Warm, gentle young female voice.", "chinese"),
        Speaker("vivian", "Bright, slightly edgy young female voice.", "chinese"),
        Speaker("uncle_fu", "Seasoned male voice with a low, mellow timbre.", "chinese"),
        Speaker("ryan", "Dynamic male voice with strong rhythmic drive.", "english"),
        Speaker("aiden", "Sunny American male voice with a clear midrange.", "english"),
        Speaker("ono_anna", "Playful Japanese female voice with a light, nimble timbre.", "japanese"),
        Speaker("sohee", "Warm Korean female voice with rich emotion.", "korean"),
        Speaker("eric", "Lively Chengdu male voice with a slightly husky brightness.", "chinese", "sichuan"),
        Speaker("dylan", "Youthful Beijing male voice with a clear, natural timbre.", "chinese", "beijing"),
    )
}

LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("auto", "Auto-detect", None),
        Language("chinese", "Chinese", "zh"),
        Language("english", "English", "en"),
        Language("german", "German", "de"),
        Language("italian", "Italian", "it"),
        Language("portuguese", "Portuguese", "pt"),
        Language("spanish", "Spanish", "es"),
        Language("japanese", "Japanese", "ja"),
        Language("korean", "Korean", "ko"),
        Language("french", "French", "fr"),
        Language("russian", "Russian", "ru"),
    )
}
_LANGUAGE_ALIASES = {lang.iso_639_1: lang.code for lang in LANGUAGES.values() if lang.iso_639_1}

CLONE_VOICE_PREFIX = "qwen3-clone-"
VOICE_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")

SPEAKER_NAMES = ", ".join(SPEAKERS)
LANGUAGE_CODES = ", ".join(LANGUAGES)


def parse_speaker(value: str) -> str:
    """Normalise a timbre name (case-insensitive); ValueError lists the valid names."""
    name = value.strip().lower()
    if name not in SPEAKERS:
        raise ValueError(f"unknown speaker {value[:64]!r}; valid speakers: {SPEAKER_NAMES}")
    return name


def parse_language(value: str) -> str:
    """Normalise a language (name or ISO 639-1 code, case-insensitive); ValueError lists the codes."""
    code = value.strip().lower()
    code = _LANGUAGE_ALIASES.get(code, code)
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {value[:64]!r}; valid languages: {LANGUAGE_CODES}")
    return code


def parse_voice(value: str) -> str:
    """A timbre name or ``qwen3-clone-<id>`` from the voice library (normalised to lower case)."""
    voice = value.strip().lower()
    if voice.startswith(CLONE_VOICE_PREFIX):
        return voice
    if voice not in SPEAKERS:
        raise ValueError(
            f"unknown voice {value[:64]!r}; valid voices: {SPEAKER_NAMES}, or {CLONE_VOICE_PREFIX}<id> "
            "from /voices"
        )
    return voice


def clone_voice_id(voice: str) -> str | None:
    """The voice-library id of a ``qwen3-clone-<id>`` voice, else None."""
    return voice[len(CLONE_VOICE_PREFIX) :] if voice.startswith(CLONE_VOICE_PREFIX) else None
