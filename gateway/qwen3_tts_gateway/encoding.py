"""Output audio: whole files (wav, flac, mp3, opus in ogg, raw pcm) and incremental stream encoders.

The stream encoders hand out the bytes produced by each ``feed`` at once, so a player can start on the
first chunk: WAV gets a header with "unknown" sizes, MP3 is constant-bitrate without the Xing/LAME tag
(which libsndfile would rewrite at the start of the file on close), Ogg/Opus pages are flushed every
``_OGG_PAGE_LATENCY_MS`` rather than every second.
"""

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
STREAMABLE_FORMATS: tuple[str, ...] = ("pcm", "wav", "mp3", "opus")
CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "pcm": "audio/pcm",
}
_SOUNDFILE_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# libsndfile sf_command() codes (sndfile.h, libsndfile >= 1.1) and values.
_SFC_SET_COMPRESSION_LEVEL = 0x1301
_SFC_SET_OGG_PAGE_LATENCY = 0x1303
_SFC_SET_BITRATE_MODE = 0x1305
_SF_BITRATE_MODE_CONSTANT = 0
_OGG_PAGE_LATENCY_MS = 60.0  # libsndfile's default is 1000 ms: a second of audio before the first page
_MP3_COMPRESSION_LEVEL = 0.65  # constant bitrate, about 64 kbit/s mono at 24 kHz


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


def _sf_command(file: sf.SoundFile, command: int, value: float | int) -> bool:
    """``sf_command`` with a double or int argument (soundfile exposes no wrapper for these)."""
    ctype = "double*" if isinstance(value, float) else "int*"
    argument = sf._ffi.new(ctype, value)
    try:
        return bool(sf._snd.sf_command(file._file, command, argument, sf._ffi.sizeof(ctype[:-1])))
    except AttributeError:  # a soundfile without the cffi handles: keep libsndfile's defaults
        logger.warning("cannot tune the stream encoder (sf_command 0x%x unavailable)", command)
        return False


class _SoundFileStreamEncoder:
    """A libsndfile writer on an append-only sink: ``feed`` returns the bytes each write produced."""

    def __init__(self, source_rate: int, rate: int, container: str, subtype: str) -> None:
        self._source_rate = source_rate
        self._rate = rate
        self._sink = _AppendOnlySink()
        self._file = sf.SoundFile(self._sink, "w", rate, 1, format=container, subtype=subtype)

    def feed(self, samples: np.ndarray) -> bytes:
        if len(samples):
            samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
            self._file.write(resample(samples, self._source_rate, self._rate))
        return self._sink.take()

    def finish(self) -> bytes:
        if not self._file.closed:
            self._file.close()
        return self._sink.take()


class OggOpusStreamEncoder(_SoundFileStreamEncoder):
    """Opus in Ogg, encoded incrementally (Ogg pages are append-only, so streamed bytes stay valid)."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate, _opus_rate(sample_rate), "OGG", "OPUS")
        _sf_command(self._file, _SFC_SET_OGG_PAGE_LATENCY, _OGG_PAGE_LATENCY_MS)


def _leading_zero_frame(data: bytes) -> int:
    """Length of a first MP3 frame whose payload is all zeros (LAME's placeholder for the Xing/Info tag,
    filled in on close by seeking back), else 0. Its place in a stream is just that silent gap."""
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return 0
    end = 4 + len(data[4:]) - len(data[4:].lstrip(b"\0"))
    if end == len(data) or data[end] != 0xFF or data[end + 1 : end + 2] != data[1:2]:
        return 0  # not a whole frame of zeros followed by the next frame's header
    return end


class Mp3StreamEncoder(_SoundFileStreamEncoder):
    """Constant-bitrate MP3 frames as LAME produces them, without the tag frame that libsndfile would
    rewrite over bytes already sent (the stream is then a plain CBR MP3, as internet radio sends)."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate, sample_rate, "MP3", "MPEG_LAYER_III")
        _sf_command(self._file, _SFC_SET_BITRATE_MODE, _SF_BITRATE_MODE_CONSTANT)
        _sf_command(self._file, _SFC_SET_COMPRESSION_LEVEL, _MP3_COMPRESSION_LEVEL)
        self._started = False

    def feed(self, samples: np.ndarray) -> bytes:
        return self._strip_tag(super().feed(samples))

    def finish(self) -> bytes:
        return self._strip_tag(super().finish())

    def _strip_tag(self, data: bytes) -> bytes:
        if self._started or not data:
            return data
        self._started = True
        return data[_leading_zero_frame(data) :]


def stream_encoder(fmt: str, sample_rate: int) -> StreamEncoder:
    if fmt == "pcm":
        return PcmStreamEncoder()
    if fmt == "wav":
        return WavStreamEncoder(sample_rate)
    if fmt == "mp3":
        return Mp3StreamEncoder(sample_rate)
    if fmt == "opus":
        return OggOpusStreamEncoder(sample_rate)
    raise ValueError(f"format {fmt!r} cannot be streamed; streamable: {', '.join(STREAMABLE_FORMATS)}")
