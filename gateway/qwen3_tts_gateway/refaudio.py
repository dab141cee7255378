"""Reference audio for cloning: sniff the format from the bytes, decode, mix to mono, resample to 24 kHz.

Only the decoded float array ever leaves this module; user bytes never become paths or URLs.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from qwen3_tts_serving.sampling_ranges import REF_SAMPLE_RATES

from .errors import (
    MAX_REF_AUDIO_SETTING,
    MIN_REF_AUDIO_SETTING,
    BadRequestError,
    PayloadTooLargeError,
    reference_too_large,
)

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 24_000
SUPPORTED_INPUT_FORMATS = ("wav", "flac", "mp3", "ogg")


@dataclass(frozen=True)
class ReferenceAudio:
    samples: np.ndarray  # float32 mono at ``sample_rate``
    sample_rate: int
    source_format: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class AudioLimits:
    min_seconds: float
    max_seconds: float
    max_bytes: int


def detect_format(data: bytes) -> str | None:
    """The container of ``data`` from its magic bytes: wav, flac, mp3, ogg, or None."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3":
        return "mp3"
    # MPEG audio frame sync with a non-zero layer (ADTS AAC has layer bits 00).
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) != 0:
        return "mp3"
    return None


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Decode base64 audio (a ``data:...;base64,`` prefix is allowed); 413 when over ``max_bytes``."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise reference_too_large(max_bytes, "ref_audio")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("ref_audio is not valid base64", param="ref_audio") from None


def to_mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def resample(samples: np.ndarray, source_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    divisor = gcd(source_rate, target_rate)
    out = resample_poly(samples, target_rate // divisor, source_rate // divisor)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _too_long(max_seconds: float) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"reference audio is longer than {max_seconds:g} s ({MAX_REF_AUDIO_SETTING})", param="ref_audio"
    )


def _read(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if not REF_SAMPLE_RATES.contains(f.samplerate):
                raise BadRequestError(
                    f"reference audio is sampled at {f.samplerate} Hz; supported: "
                    f"{REF_SAMPLE_RATES.low:g} to {REF_SAMPLE_RATES.high:g} Hz",
                    param="ref_audio",
                )
            if f.frames > 0 and f.frames / f.samplerate > max_seconds:
                raise _too_long(max_seconds)
            return f.read(dtype="float32", always_2d=True), f.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        logger.info("undecodable reference audio: %s", exc)
        raise BadRequestError("could not decode the reference audio", param="ref_audio") from None


def decode_reference(data: bytes, limits: AudioLimits) -> ReferenceAudio:
    """Validate and decode a reference clip: 400 bad/short, 413 too big/long."""
    if len(data) > limits.max_bytes:
        raise reference_too_large(limits.max_bytes, "ref_audio")
    fmt = detect_format(data)
    if fmt is None:
        supported = ", ".join(SUPPORTED_INPUT_FORMATS)
        raise BadRequestError(
            f"unrecognised reference audio format; supported: {supported}", param="ref_audio"
        )
    samples, rate = _read(data, limits.max_seconds)
    mono = to_mono(samples)
    if not np.all(np.isfinite(mono)):  # an empty clip goes on to "0.00 s; the minimum is ..."
        raise BadRequestError("reference audio has NaN or infinite samples", param="ref_audio")
    duration = mono.size / rate
    if duration > limits.max_seconds:
        raise _too_long(limits.max_seconds)
    if duration < limits.min_seconds:
        raise BadRequestError(
            f"reference audio is {duration:.2f} s; the minimum is {limits.min_seconds:g} s "
            f"({MIN_REF_AUDIO_SETTING})",
            param="ref_audio",
        )
    return ReferenceAudio(resample(mono, rate), TARGET_SAMPLE_RATE, fmt)
