"""Reference-audio decoding (format sniffed from bytes) and output encoders, on real encoded bytes."""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_gateway.encoding import (
    OggOpusStreamEncoder,
    WavStreamEncoder,
    encode_audio,
    pcm16,
    stream_encoder,
)
from qwen3_tts_gateway.errors import BadRequestError, PayloadTooLargeError
from qwen3_tts_gateway.refaudio import AudioLimits, decode_base64, decode_reference, detect_format, resample

from .conftest import clip, tone

LIMITS = AudioLimits(min_seconds=3.0, max_seconds=30.0, max_bytes=20 * 1024 * 1024)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_detect_format(fmt: str) -> None:
    assert detect_format(clip(0.5, fmt)) == fmt


def test_detect_format_rejects_others() -> None:
    assert detect_format(b"") is None
    assert detect_format(b"\xff\xf1\x50\x80" + b"\0" * 10) is None  # ADTS AAC
    assert detect_format(b"<html>") is None
    assert detect_format(b"RIFF\0\0\0\0AVI ") is None


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
@pytest.mark.parametrize(("rate", "channels"), [(24_000, 1), (44_100, 2), (16_000, 1), (48_000, 2)])
def test_decode_to_mono_24k(fmt: str, rate: int, channels: int) -> None:
    reference = decode_reference(clip(4.0, fmt, sample_rate=rate, channels=channels), LIMITS)
    assert reference.sample_rate == 24_000 and reference.samples.ndim == 1
    assert reference.samples.dtype == np.float32 and reference.source_format == fmt
    assert reference.duration_s == pytest.approx(4.0, abs=0.1)  # mp3 adds encoder padding
    spectrum = np.abs(np.fft.rfft(reference.samples[: 24_000 * 2]))
    assert np.argmax(spectrum) / 2 == pytest.approx(220.0, abs=2.0)  # the tone survived resampling


def test_stereo_is_mixed() -> None:
    left_only = np.stack([tone(4.0), np.zeros(96_000, np.float32)], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, left_only, 24_000, format="WAV", subtype="FLOAT")
    reference = decode_reference(buffer.getvalue(), LIMITS)
    assert np.max(np.abs(reference.samples)) == pytest.approx(0.2, abs=1e-3)


def test_too_short_too_long_too_big() -> None:
    with pytest.raises(
        BadRequestError, match=r"minimum is 3 s \(min_ref_audio_seconds, env QWEN3_TTS_MIN_REF_"
    ):
        decode_reference(clip(2.5), LIMITS)
    with pytest.raises(
        PayloadTooLargeError, match=r"longer than 30 s \(max_ref_audio_seconds, env QWEN3_TTS_MAX_"
    ):
        decode_reference(clip(30.5, "flac"), LIMITS)
    with pytest.raises(PayloadTooLargeError, match="exceeds 1000 bytes"):
        decode_reference(clip(4.0), AudioLimits(3.0, 30.0, 1000))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage" * 100,
        b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 8,
        b"fLaC" + b"\x00" * 50,
        b"OggS" * 20,
    ],
)
def test_undecodable(data: bytes) -> None:
    with pytest.raises(BadRequestError):
        decode_reference(data, LIMITS)


def test_base64() -> None:
    assert decode_base64(base64.b64encode(b"abc").decode(), 10) == b"abc"
    assert decode_base64("data:audio/wav;base64," + base64.b64encode(b"abc").decode(), 10) == b"abc"
    with pytest.raises(BadRequestError):
        decode_base64("not base64!", 100)
    with pytest.raises(PayloadTooLargeError):
        decode_base64(base64.b64encode(b"x" * 1000).decode(), 100)


def test_resample_lengths() -> None:
    assert len(resample(np.zeros(44_100, np.float32), 44_100)) == 24_000
    assert len(resample(np.zeros(8_000, np.float32), 8_000)) == 24_000


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_encode_roundtrip(fmt: str) -> None:
    samples = tone(1.0)
    audio, rate = sf.read(io.BytesIO(encode_audio(samples, 24_000, fmt)), dtype="float32")
    assert rate == 24_000 and abs(len(audio) - 24_000) < 2400
    if fmt in ("wav", "flac"):
        np.testing.assert_allclose(audio, samples, atol=1e-4)


def test_pcm16() -> None:
    data = pcm16(np.array([0.0, 1.0, -1.0, 2.0], np.float32))
    assert struct.unpack("<4h", data) == (0, 32767, -32767, 32767)
    assert encode_audio(np.zeros(10, np.float32), 24_000, "pcm") == b"\0" * 20


def test_wav_stream_header_then_pcm() -> None:
    encoder = WavStreamEncoder(24_000)
    first, second = encoder.feed(tone(0.1)), encoder.feed(tone(0.1))
    assert first[:4] == b"RIFF" and first[8:12] == b"WAVE" and len(first) == 44 + 4800
    assert len(second) == 4800 and encoder.finish() == b""
    assert struct.unpack("<I", first[24:28]) == (24_000,)


def test_opus_stream_is_one_valid_file() -> None:
    encoder = OggOpusStreamEncoder(24_000)
    parts = [encoder.feed(tone(0.16)) for _ in range(10)] + [encoder.finish()]
    audio, rate = sf.read(io.BytesIO(b"".join(parts)), dtype="float32")
    assert rate == 24_000 and abs(len(audio) - 10 * 3840) < 2400


def test_unstreamable_format() -> None:
    with pytest.raises(ValueError, match="streamable: pcm, wav, mp3, opus"):
        stream_encoder("flac", 24_000)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus"])
def test_stream_prefix_decodes_to_the_first_audio(fmt: str) -> None:
    """The bytes of the first chunks alone are a playable file holding (about) those chunks' audio."""
    encoder = stream_encoder(fmt, 24_000)
    first_chunks = tone(0.32), tone(0.16)
    prefix = b"".join(encoder.feed(chunk) for chunk in first_chunks)
    rest = encoder.feed(tone(1.0)) + encoder.finish()
    head, rate = sf.read(io.BytesIO(prefix), dtype="float32")
    whole, _ = sf.read(io.BytesIO(prefix + rest), dtype="float32")
    fed = sum(len(chunk) for chunk in first_chunks)
    assert rate == 24_000
    # Lossy encoders hold back up to a frame or two (MP3 1152 samples, Opus 20 ms pages) and add a delay.
    assert fed - 2 * 1152 <= len(head) <= fed + 1152, (len(head), fed)
    assert abs(len(whole) - (fed + 24_000)) < 2400
    if fmt == "wav":
        np.testing.assert_allclose(head, np.concatenate(first_chunks), atol=1e-4)


def test_mp3_stream_never_rewrites_sent_bytes() -> None:
    """Constant bitrate, no Xing/LAME tag frame: what was sent is what a whole file would hold."""
    encoder = stream_encoder("mp3", 24_000)
    sent = b"".join(encoder.feed(tone(0.2)) for _ in range(5)) + encoder.finish()
    assert sent[:2] == b"\xff\xf3"  # an MPEG-2 layer III frame header right away
    assert b"Xing" not in sent and b"Info" not in sent[:200]
    audio, rate = sf.read(io.BytesIO(sent), dtype="float32")
    assert rate == 24_000 and abs(len(audio) - 24_000) < 2400
