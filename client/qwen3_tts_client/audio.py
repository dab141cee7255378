"""Audio helpers: decode/encode files in memory, float ↔ 16-bit PCM, and a streamable WAV header."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "CONTENT_TYPES",
    "SOUNDFILE_FORMATS",
    "decode_audio",
    "encode_audio",
    "float_to_pcm16",
    "pcm16_to_float",
    "read_audio_file",
    "streaming_wav_header",
]

CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg; codecs=opus",
    "mp3": "audio/mpeg",
    "pcm": "audio/pcm",
    "aac": "audio/aac",
}
# Formats libsndfile writes; "pcm" (raw s16le) is handled without it.
SOUNDFILE_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),  # Opus takes 8/12/16/24/48 kHz; the models' 24 kHz is one of them
    "ogg": ("OGG", "VORBIS"),
}


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to little-endian 16-bit PCM (clipped, not wrapped)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def pcm16_to_float(data: bytes) -> np.ndarray:
    if len(data) % 2:
        raise ValueError("16-bit PCM needs an even number of bytes")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode an encoded file (wav/flac/ogg/mp3 as libsndfile supports) to mono float32 + rate."""
    samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1).astype(np.float32), int(sample_rate)


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    return decode_audio(Path(path).read_bytes())


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    """Encode mono float samples; ``pcm`` gives raw s16le, others go through libsndfile."""
    fmt = fmt.lower()
    if fmt == "pcm":
        return float_to_pcm16(samples)
    if fmt not in SOUNDFILE_FORMATS:
        raise ValueError(f"cannot encode {fmt!r}; choose one of: pcm, {', '.join(SOUNDFILE_FORMATS)}")
    container, subtype = SOUNDFILE_FORMATS[fmt]
    buffer = io.BytesIO()
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    sf.write(buffer, clipped, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def streaming_wav_header(sample_rate: int, *, channels: int = 1, data_bytes: int | None = None) -> bytes:
    """A 44-byte PCM16 WAV header; with ``data_bytes=None`` the sizes say "unknown" (0xFFFFFFFF).

    Streaming to a pipe cannot go back to fix the sizes, and players (ffplay, aplay, sox) accept the
    max-size convention; a seekable file is patched with the real sizes once the stream ends.
    """
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff_size = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    block_align = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
        + b"data"
        + struct.pack("<I", size)
    )
