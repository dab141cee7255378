"""Output audio: whole files (wav, flac, mp3, opus in ogg, raw pcm) and incremental stream encoders."""

from __future__ import annotations

import io
import logging
import struct
from typing import Literal, Protocol

import numpy as np
import soundfile as sf

from .refaudio import resample

logger = logging.getLogger(__name__)

OutputFormat = Literal["wav", "flac", "mp3", "opus", "pcm"]
OUTPUT_FORMATS: tuple[str, ...] = ("wav", "flac", "mp3", "opus", "pcm")
STREAMABLE_FORMATS: tuple[str, ...] = ("pcm", "wav", "opus")
CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "pcm": "audio/pcm",
}
_SOUNDFILE_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as raw 16-bit little-endian PCM."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2").tobytes()


def _opus_rate(sample_rate: int) -> int:
    return sample_rate if sample_rate in _OPUS_RATES else 48000


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """One complete file (or raw PCM) of mono float samples."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0 and fmt in ("flac", "mp3"):
        samples = np.zeros(1, np.float32)  # their encoders write nothing at all for zero frames
    if fmt == "pcm":
        return pcm16(samples)
    buffer = io.BytesIO()
    if fmt == "opus":
        rate = _opus_rate(sample_rate)
        sf.write(buffer, resample(samples, sample_rate, rate), rate, format="OGG", subtype="OPUS")
    else:
        container, subtype = _SOUNDFILE_FORMATS[fmt]
        sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


class StreamEncoder(Protocol):
    def feed(self, samples: np.ndarray) -> bytes: ...

    def finish(self) -> bytes: ...


class PcmStreamEncoder:
    def feed(self, samples: np.ndarray) -> bytes:
        return pcm16(samples)

    def finish(self) -> bytes:
        return b""


def streaming_wav_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A WAV header whose sizes say "unknown length" (0xFFFFFFFF), as streaming servers send."""
    block_align = channels * bits // 8
    fmt_chunk = struct.pack(
        "<4sIHHIIHH", b"fmt ", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, bits
    )
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + fmt_chunk
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


class WavStreamEncoder:
    def __init__(self, sample_rate: int) -> None:
        self._header: bytes | None = streaming_wav_header(sample_rate)

    def feed(self, samples: np.ndarray) -> bytes:
        header, self._header = self._header or b"", None
        return header + pcm16(samples)

    def finish(self) -> bytes:
        header, self._header = self._header or b"", None
        return header


class _AppendOnlySink(io.RawIOBase):
    """A seekable in-memory file that hands out the bytes written since the last ``take()``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._taken = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        data = bytes(data)
        end = self._pos + len(data)
        if self._pos < self._taken:
            logger.debug("encoder rewrote %d already streamed bytes", min(end, self._taken) - self._pos)
        if end > len(self._buffer):
            self._buffer.extend(b"\0" * (end - len(self._buffer)))
        self._buffer[self._pos : end] = data
        self._pos = end
        return len(data)

    def read(self, size: int = -1) -> bytes:
        end = len(self._buffer) if size is None or size < 0 else self._pos + size
        data = bytes(self._buffer[self._pos : end])
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._buffer)}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        data = bytes(self._buffer[self._taken :])
        self._taken = len(self._buffer)
        return data


class OggOpusStreamEncoder:
    """Opus in Ogg, encoded incrementally (Ogg pages are append-only, so streamed bytes stay valid)."""

    def __init__(self, sample_rate: int) -> None:
        self._source_rate = sample_rate
        self._rate = _opus_rate(sample_rate)
        self._sink = _AppendOnlySink()
        self._file = sf.SoundFile(self._sink, "w", self._rate, 1, format="OGG", subtype="OPUS")

    def feed(self, samples: np.ndarray) -> bytes:
        if len(samples):
            self._file.write(resample(np.asarray(samples, dtype=np.float32), self._source_rate, self._rate))
        return self._sink.take()

    def finish(self) -> bytes:
        if not self._file.closed:
            self._file.close()
        return self._sink.take()


def stream_encoder(fmt: str, sample_rate: int) -> StreamEncoder:
    if fmt == "pcm":
        return PcmStreamEncoder()
    if fmt == "wav":
        return WavStreamEncoder(sample_rate)
    if fmt == "opus":
        return OggOpusStreamEncoder(sample_rate)
    raise ValueError(f"format {fmt!r} cannot be streamed; streamable: {', '.join(STREAMABLE_FORMATS)}")
