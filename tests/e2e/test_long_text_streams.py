"""Long text and streamed encodings end to end (real gateway, real Triton, real models).

* long text on the non-session endpoints: sentence segments streamed as one (sequence numbers continue,
  one ``is_last``, a closing ``done`` line), the same audio as the whole file, a one-off clone encoding
  its reference once;
* PCM, WAV, MP3 and Ogg/Opus sent as they are produced: the first bytes alone decode to the first audio.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_client import Qwen3TTSClient

from .conftest import Gateway

pytestmark = pytest.mark.e2e

SAY = {"voice": "aiden", "language": "english", "seed": 11, "max_new_tokens": 40}
LONG_TEXT = (
    "Dr. Brown measured 3.5 litres before noon. It was more than expected! Was the scale right? "
    "Nobody knew, e.g. the intern said nothing. 他说：今天很好。"
)
MP3_FRAME = 1152


@contextmanager
def segment_chars(gateway: Gateway, chars: int) -> Iterator[None]:
    service = gateway.app.state.service
    saved, service.segment_chars = service.segment_chars, chars
    try:
        yield
    finally:
        service.segment_chars = saved


@pytest.fixture
def http(agent_gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent_gateway.url, timeout=300) as client:
        yield client


def ndjson(http: httpx.Client, body: dict) -> tuple[list[dict], dict]:
    with http.stream("POST", "/synthesize/stream", json=body) as response:
        assert response.status_code == 200, response.read()
        *chunks, done = [json.loads(line) for line in response.iter_lines() if line]
    return chunks, done


def pcm_of(chunks: list[dict]) -> np.ndarray:
    data = b"".join(base64.b64decode(chunk["audio"]) for chunk in chunks)
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def test_long_text_is_one_stream_of_segments(agent_gateway: Gateway, http: httpx.Client) -> None:
    body = {"text": LONG_TEXT, **SAY}
    with segment_chars(agent_gateway, 60):
        chunks, done = ndjson(http, body)
        whole = http.post("/synthesize", json={**body, "response_format": "pcm"})
    assert [chunk["sequence"] for chunk in chunks] == list(range(len(chunks)))
    assert [chunk["is_last"] for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    assert done["type"] == "done" and done["chunks"] == len(chunks)
    assert done["finish_reason"] == chunks[-1]["finish_reason"] in ("stop", "length", "repetition")
    assert whole.headers["x-finish-reason"] == done["finish_reason"]
    streamed = pcm_of(chunks)
    assert len(streamed) > 4 * 40 * 1920 // 2  # several segments' worth, not just the first
    # Same codes, same audio up to the engine's stated batched-vs-alone tolerance (1e-4, README): the
    # segments are pipelined, so which streams share a decoder call depends on timing, and a float
    # difference that small can still flip an int16 sample by one step.
    whole_pcm = np.frombuffer(whole.content, "<i2").astype(np.float32) / 32768.0
    assert streamed.shape == whole_pcm.shape
    np.testing.assert_allclose(streamed, whole_pcm, rtol=0, atol=1e-4 + 1 / 32768)
    metrics = http.get("/metrics").text
    assert f'qwen3_tts_gateway_finish_reasons_total{{reason="{done["finish_reason"]}"' in metrics


def test_a_long_one_off_clone(agent_gateway: Gateway, http: httpx.Client) -> None:
    t = np.arange(24_000 * 4) / 24_000
    reference = io.BytesIO()
    sf.write(reference, (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 24_000, format="WAV")
    body = {
        "text": LONG_TEXT,
        "ref_audio": base64.b64encode(reference.getvalue()).decode(),
        "ref_text": "A calm reference voice.",
        "language": "english",
        "seed": 3,
        "max_new_tokens": 24,
        "response_format": "wav",
    }
    with segment_chars(agent_gateway, 60):
        response = http.post("/clone", json=body)
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == 24_000 and len(audio) > 3 * 1920  # more than one segment of audio


def read_as_produced(http: httpx.Client, path: str, body: dict) -> tuple[list[bytes], list[float], str]:
    """The body's pieces as the network delivers them, with their arrival times."""
    pieces, times = [], []
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert "content-length" not in response.headers  # chunked: sent as it is produced
        for piece in response.iter_raw():
            pieces.append(piece)
            times.append(time.monotonic())
        content_type = response.headers["content-type"]
    return pieces, times, content_type


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus"])
def test_encoded_streams_are_playable_from_their_first_bytes(http: httpx.Client, fmt: str) -> None:
    body = {"text": "Streaming audio, chunk by chunk.", **SAY, "max_new_tokens": 60}
    reference, _ = ndjson(http, body)
    bounds = np.cumsum([len(base64.b64decode(chunk["audio"])) // 2 for chunk in reference])
    pieces, times, content_type = read_as_produced(
        http, "/synthesize/stream", {**body, "stream_format": "audio", "response_format": fmt}
    )
    assert content_type.startswith({"wav": "audio/wav", "mp3": "audio/mpeg", "opus": "audio/ogg"}[fmt])
    assert len(pieces) > 1 and times[0] < times[-1]
    head, rate = sf.read(io.BytesIO(pieces[0]), dtype="float32")
    whole, _ = sf.read(io.BytesIO(b"".join(pieces)), dtype="float32")
    assert rate == 24_000 and 0 < len(head) < len(whole)
    # The first piece holds the first k chunks; a lossy encoder may hold back up to two frames of them.
    assert any(bound - 2 * MP3_FRAME <= len(head) <= bound for bound in bounds), (len(head), bounds[:4])
    assert abs(len(whole) - bounds[-1]) <= 2 * MP3_FRAME
    if fmt == "wav":
        np.testing.assert_allclose(whole, pcm_of(reference), atol=1e-4)


def test_openai_speech_streams_mp3(http: httpx.Client) -> None:
    body = {"model": "tts-1", "input": "Hello from the speech endpoint.", "voice": "aiden", "seed": 2}
    pieces, _, content_type = read_as_produced(http, "/v1/audio/speech", {**body, "max_new_tokens": 40})
    assert content_type == "audio/mpeg" and len(pieces) > 1
    audio, rate = sf.read(io.BytesIO(b"".join(pieces)))
    assert rate == 24_000 and len(audio) > 0


def test_a_session_streams_opus(agent_gateway: Gateway) -> None:
    with Qwen3TTSClient(base_url=agent_gateway.url, timeout=300) as client:
        with client.session(voice="ryan", format="opus", do_sample=False, max_new_tokens=40) as session:
            session.send_text("An opus session, page by page.")
            session.end()
            pages = [chunk.data for chunk in session]
    assert session.finish_reason in ("stop", "length") and len(pages) > 1
    first, rate = sf.read(io.BytesIO(pages[0]))
    whole, _ = sf.read(io.BytesIO(b"".join(pages)))
    assert rate == 24_000 and 0 < len(first) < len(whole)
