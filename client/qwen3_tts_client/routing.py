"""Voice model ids as apps see them, and where each one is routed.

``qwen3-<timbre>`` (``qwen3-vivian``) is one of the premium CustomVoice timbres; ``qwen3-clone-<id>``
is a voice saved in the gateway's voice library. The prefix is matched case-insensitively (ids come
from config files and UIs); the part after it is passed on exactly as written, since library ids may
be case-sensitive and the gateway matches timbres case-insensitively itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CLONE_PREFIX",
    "PREFIX",
    "TIMBRES",
    "UnknownVoiceError",
    "VoiceRoute",
    "clone_voice_id",
    "premium_voice_id",
    "route_voice",
]

PREFIX = "qwen3-"
CLONE_PREFIX = "qwen3-clone-"
# The nine CustomVoice timbres (the gateway's GET /speakers is authoritative; this is for offline use).
TIMBRES: tuple[str, ...] = (
    "vivian",
    "serena",
    "uncle_fu",
    "dylan",
    "eric",
    "ryan",
    "aiden",
    "ono_anna",
    "sohee",
)

VoiceKind = Literal["premium", "clone"]


class UnknownVoiceError(ValueError):
    """The voice id is not one this provider serves."""


@dataclass(frozen=True)
class VoiceRoute:
    kind: VoiceKind
    target: str  # the timbre for "premium", the voice-library id for "clone"

    @property
    def voice_id(self) -> str:
        return clone_voice_id(self.target) if self.kind == "clone" else premium_voice_id(self.target)


def premium_voice_id(timbre: str) -> str:
    if not timbre or _is_clone_target(timbre):
        raise UnknownVoiceError(f"not a timbre name: {timbre!r}")
    return PREFIX + timbre


def clone_voice_id(voice_id: str) -> str:
    if not voice_id:
        raise UnknownVoiceError("a cloned voice needs a non-empty library id")
    return CLONE_PREFIX + voice_id


def _is_clone_target(timbre: str) -> bool:
    # "qwen3-clone" and "qwen3-clone-…" belong to the library namespace, never to a timbre.
    return timbre.lower() == "clone" or _has_prefix(timbre, "clone-")


def _has_prefix(value: str, prefix: str) -> bool:
    # Compare only the leading slice: lower-casing the whole id could change its length (e.g. "İ").
    return value[: len(prefix)].lower() == prefix


def route_voice(voice_id: str) -> VoiceRoute:
    """Where ``voice_id`` goes; raises UnknownVoiceError for ids outside the ``qwen3-`` namespace."""
    if _has_prefix(voice_id, CLONE_PREFIX):
        target = voice_id[len(CLONE_PREFIX) :]
        if not target:
            raise UnknownVoiceError(f"{voice_id!r} lacks the voice-library id after {CLONE_PREFIX!r}")
        return VoiceRoute("clone", target)
    if _has_prefix(voice_id, PREFIX):
        target = voice_id[len(PREFIX) :]
        if not target or _is_clone_target(target):
            raise UnknownVoiceError(
                f"{voice_id!r} names no timbre; use {PREFIX}<timbre> or {CLONE_PREFIX}<id>"
            )
        return VoiceRoute("premium", target)
    raise UnknownVoiceError(
        f"{voice_id!r} is not a Qwen3-TTS voice (expected {PREFIX}<timbre> or {CLONE_PREFIX}<id>)"
    )
