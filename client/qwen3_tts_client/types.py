"""Result types returned by the clients (plain frozen dataclasses: cheap, picklable, no validation cost)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .audio import decode_audio, float_to_pcm16, pcm16_to_float
from .routing import clone_voice_id

__all__ = [
    "AudioChunk",
    "HealthStatus",
    "Language",
    "SamplingOptions",
    "Speaker",
    "SpeechResult",
    "Voice",
]


class SamplingOptions(TypedDict, total=False):
    """Sampling overrides accepted by every synthesis call; omitted keys keep the model's defaults."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class SpeechResult:
    """A whole synthesized file, as the gateway encoded it, plus the metadata headers."""

    audio: bytes
    format: str
    content_type: str
    sample_rate: int | None = None
    duration: float | None = None
    finish_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    def to_numpy(self) -> tuple[np.ndarray, int]:
        """Decode to mono float32 samples and the sample rate (raw ``pcm`` uses the X-Sample-Rate)."""
        if self.format == "pcm":
            if self.sample_rate is None:
                raise ValueError("raw PCM without X-Sample-Rate cannot be decoded")
            return pcm16_to_float(self.audio), self.sample_rate
        return decode_audio(self.audio)

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(self.audio)
        return target


@dataclass(frozen=True)
class AudioChunk:
    """One piece of a stream. ``audio`` is mono float32 in [-1, 1]; ``data`` the bytes as sent."""

    sequence: int
    audio: np.ndarray = field(repr=False)
    sample_rate: int
    is_last: bool
    finish_reason: str | None = None
    data: bytes = field(default=b"", repr=False)
    format: str = "pcm"

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate if self.sample_rate else 0.0

    def pcm16(self) -> bytes:
        """The samples as raw 16-bit little-endian PCM (what ``aplay -f S16_LE`` plays)."""
        if self.format == "pcm" and self.data:
            return self.data
        return float_to_pcm16(self.audio)

    @classmethod
    def from_pcm16(
        cls, sequence: int, data: bytes, sample_rate: int, is_last: bool, finish_reason: str | None
    ) -> AudioChunk:
        return cls(sequence, pcm16_to_float(data), sample_rate, is_last, finish_reason or None, data, "pcm")


@dataclass(frozen=True)
class Voice:
    """A voice saved in the gateway's library; use ``model_id`` wherever a voice is expected."""

    id: str
    name: str | None = None
    ref_text: str | None = None
    created_at: float | None = None  # Unix time
    duration_s: float | None = None  # of the reference clip
    x_vector_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def model_id(self) -> str:
        return clone_voice_id(self.id)


@dataclass(frozen=True)
class Speaker:
    name: str
    description: str | None = None
    native_language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Language:
    code: str
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class HealthStatus:
    """``ok`` is the verdict; ``details`` the JSON body the gateway sent."""

    ok: bool
    status: str
    details: dict[str, Any] = field(default_factory=dict)
