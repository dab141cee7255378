"""Routes over a fake engine: request/response shapes, formats, headers and error statuses.

The fake engine (see fakes.py) is used only to drive the gateway's own routing and validation logic.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread
from qwen3_tts_gateway.errors import (
    EngineFailureError,
    EngineInvalidRequestError,
    EngineUnavailableError,
    UpstreamTimeoutError,
)

from .conftest import MODELS, clip, make_settings
from .fakes import FakeEngine

SYNTH = {"text": "Hello there.", "speaker": "Vivian"}


def decode(data: bytes) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(data), dtype="float32")


def float_wav(samples: np.ndarray, sample_rate: int = 24_000) -> bytes:
    """A 32-bit float WAV: it carries any float, NaN included (an integer WAV would clip it)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


async def test_health_and_docs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/synthesize", "/clone", "/design", "/synthesize/stream", "/voices", "/v1/audio/speech"):
        assert path in paths


async def test_ready_reports_models(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["models"] == dict.fromkeys(MODELS, True)
    engine.unready_models.add("voice_design")
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["models"]["voice_design"] is False
    engine.server_ready = False
    assert (await client.get("/ready")).json() == {
        "ready": False,
        "server": False,
        "models": dict.fromkeys(MODELS, False),
    }


async def test_ready_checks_only_the_models_the_server_serves(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.served = ("custom_voice",)  # qwen3-tts-serve --models custom_voice
    engine.unready_models.add("voice_design")  # not served: must not hold /ready back
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["models"] == {"custom_voice": True}
    engine.unready_models.add("custom_voice")
    assert (await client.get("/ready")).status_code == 503


async def test_speakers_and_languages(client: httpx.AsyncClient) -> None:
    speakers = {s["name"]: s for s in (await client.get("/speakers")).json()["speakers"]}
    assert set(speakers) == {
        "serena", "vivian", "uncle_fu", "ryan", "aiden", "ono_anna", "sohee", "eric", "dylan"
    }  # fmt: skip
    assert speakers["eric"]["native_language"] == "chinese" and speakers["eric"]["dialect"] == "sichuan"
    assert speakers["dylan"]["dialect"] == "beijing"
    assert speakers["ono_anna"]["native_language"] == "japanese"
    assert speakers["sohee"]["native_language"] == "korean"
    assert speakers["aiden"]["native_language"] == speakers["ryan"]["native_language"] == "english"
    assert all(s["description"] for s in speakers.values())
    codes = [lang["code"] for lang in (await client.get("/languages")).json()["languages"]]
    assert codes == [
        "auto", "chinese", "english", "german", "italian", "portuguese", "spanish", "japanese", "korean",
        "french", "russian",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
async def test_synthesize_formats(client: httpx.AsyncClient, engine: FakeEngine, fmt: str) -> None:
    response = await client.post("/synthesize", json={**SYNTH, "response_format": fmt})
    assert response.status_code == 200, response.text
    audio, rate = decode(response.content)
    assert rate == 24_000
    assert abs(len(audio) - 3 * 4800) < 2400  # lossy codecs pad a little
    assert response.headers["x-sample-rate"] == "24000"
    assert response.headers["x-audio-duration"] == "0.600"
    assert response.headers["x-finish-reason"] == "stop"
    request = engine.requests[-1]
    assert (request.model, request.speaker, request.language) == ("custom_voice", "vivian", "auto")


async def test_synthesize_pcm_and_parameters(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = {
        **SYNTH,
        "language": "EN",
        "instruct": "cheerful",
        "response_format": "PCM",
        "seed": 42,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "max_new_tokens": 100,
        "do_sample": True,
    }
    response = await client.post("/synthesize", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/pcm"
    assert len(response.content) == 3 * 4800 * 2
    request = engine.requests[-1]
    assert request.language == "english" and request.instruct == "cheerful"
    assert request.sampling.seed == 42 and request.sampling.top_k == 20 and request.sampling.do_sample


async def test_design(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = {"text": "Hi.", "instruct": "A calm, low male voice.", "language": "english"}
    response = await client.post("/design", json=body)
    assert response.status_code == 200
    request = engine.requests[-1]
    assert (request.model, request.instruct, request.speaker) == ("voice_design", body["instruct"], None)
    response = await client.post("/design", json={"text": "Hi.", "instruct": "  "})
    assert response.status_code == 422


async def test_clone_json_and_multipart(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    audio = clip(4.0, "flac", sample_rate=44_100, channels=2)
    body = {"text": "Hello.", "ref_audio": base64.b64encode(audio).decode(), "ref_text": "A reference."}
    response = await client.post("/clone", json=body)
    assert response.status_code == 200, response.text
    request = engine.requests[-1]
    assert request.model == "voice_clone" and request.ref_text == "A reference."
    assert request.ref_sample_rate == 24_000 and request.ref_audio.ndim == 1
    assert abs(len(request.ref_audio) - 4 * 24_000) <= 1
    files = {"ref_audio": ("ref.mp3", clip(4.0, "mp3"), "audio/mpeg")}
    data = {"text": "Hello.", "x_vector_only": "true", "response_format": "flac", "seed": "3"}
    response = await client.post("/clone", data=data, files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/flac"
    request = engine.requests[-1]
    assert request.x_vector_only is True and request.sampling.seed == 3 and request.ref_text is None


@pytest.mark.parametrize(
    ("audio", "status", "fragment"),
    [
        (clip(1.0), 400, "minimum is 3 s"),
        (clip(31.0), 413, "longer than 30 s"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", 400, "could not decode"),
        (b"hello, not audio", 400, "unrecognised reference audio format"),
        # The range of the engine's ref_sample_rate; above it resampling costs grow with the rate.
        (clip(4.0, sample_rate=4000), 400, "sampled at 4000 Hz; supported: 8000 to 192000 Hz"),
        (clip(4.0, sample_rate=384_000), 400, "sampled at 384000 Hz; supported: 8000 to 192000 Hz"),
        (clip(0.0), 400, "reference audio is 0.00 s; the minimum is 3 s"),  # was "could not decode"
        (float_wav(np.full(96_000, np.nan, np.float32)), 400, "NaN or infinite samples"),
    ],
    ids=["short", "long", "broken-wav", "not-audio", "rate-4000", "rate-384000", "empty", "nan"],
)
async def test_clone_reference_errors(
    client: httpx.AsyncClient, engine: FakeEngine, audio: bytes, status: int, fragment: str
) -> None:
    body = {"text": "Hello.", "ref_audio": base64.b64encode(audio).decode()}
    response = await client.post("/clone", json=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]
    assert engine.requests == []


async def test_clone_requires_audio(client: httpx.AsyncClient) -> None:
    response = await client.post("/clone", json={"text": "Hello."})
    assert response.status_code == 422
    assert response.json()["error"]["errors"][0]["loc"] == "body.ref_audio"
    response = await client.post("/clone", json={"text": "Hello.", "ref_audio": "%%%"})
    assert response.status_code == 400
    response = await client.post("/clone", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


async def test_upload_limits(tmp_path, client_factory) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=50_000)
    async with client_factory(settings, FakeEngine()) as client:
        big = clip(4.0)  # 192 kB of PCM
        files = {"ref_audio": ("ref.wav", big, "audio/wav")}
        response = await client.post("/clone", data={"text": "Hi."}, files=files)
        assert response.status_code == 413
        response = await client.post(
            "/clone", json={"text": "Hi.", "ref_audio": base64.b64encode(big).decode()}
        )
        assert response.status_code == 413
        assert "exceeds" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (EngineInvalidRequestError("unknown speaker 'x'; valid: a, b"), 422),
        (EngineUnavailableError("the model server is out of memory; retry later"), 503),
        (UpstreamTimeoutError("the model server did not answer in time"), 504),
        (EngineFailureError("synthesis failed in the model server"), 502),
    ],
)
@pytest.mark.parametrize("path", ["/synthesize", "/synthesize/stream", "/v1/audio/speech"])
async def test_engine_errors_before_first_byte(
    client: httpx.AsyncClient, engine: FakeEngine, error: Exception, status: int, path: str
) -> None:
    engine.error = error
    body = (
        SYNTH if path != "/v1/audio/speech" else {"input": "Hi.", "voice": "ryan", "response_format": "pcm"}
    )
    response = await client.post(path, json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"] == str(error)
    if status == 503:
        assert response.headers["retry-after"] == "7"
    else:
        assert "retry-after" not in response.headers


async def test_timeout_before_first_chunk(tmp_path, client_factory) -> None:
    engine = FakeEngine(delay_s=2.0)
    async with client_factory(make_settings(tmp_path, request_timeout_s=0.2), engine) as client:
        response = await client.post("/synthesize/stream", json=SYNTH)
    assert response.status_code == 504
    assert engine.cancelled == 1


async def test_stream_ndjson(client: httpx.AsyncClient) -> None:
    response = await client.post("/synthesize/stream", json=SYNTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    *lines, done = [json.loads(line) for line in response.text.splitlines()]
    assert [line["type"] for line in lines] == ["chunk"] * 3
    assert [line["sequence"] for line in lines] == [0, 1, 2]
    assert [line["is_last"] for line in lines] == [False, False, True]
    assert lines[-1]["finish_reason"] == "stop" and lines[0]["finish_reason"] == ""
    assert all(line["sample_rate"] == 24_000 for line in lines)
    assert len(base64.b64decode(lines[0]["audio"])) == 4800 * 2
    # the trailer-like last line
    assert done == {
        "type": "done",
        "finish_reason": "stop",
        "sample_rate": 24_000,
        "duration": 0.6,
        "chunks": 3,
    }


async def test_stream_error_after_first_chunk_is_in_band(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.error, engine.error_at_chunk = EngineUnavailableError("out of memory"), 1
    response = await client.post("/synthesize/stream", json=SYNTH)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["sequence"] == 0
    assert lines[-1]["error"]["status"] == 503


@pytest.mark.parametrize(
    ("fmt", "media_type"), [("pcm", "audio/pcm"), ("wav", "audio/wav"), ("opus", "audio/ogg")]
)
async def test_stream_raw_audio(client: httpx.AsyncClient, fmt: str, media_type: str) -> None:
    body = {**SYNTH, "stream_format": "audio", "response_format": fmt}
    response = await client.post("/synthesize/stream", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["x-sample-rate"] == "24000"
    if fmt == "pcm":
        assert len(response.content) == 3 * 4800 * 2
    elif fmt == "opus":
        audio, rate = decode(response.content)
        assert rate == 24_000 and abs(len(audio) - 3 * 4800) < 2400
    else:
        assert response.content[:4] == b"RIFF" and len(response.content) == 44 + 3 * 4800 * 2


async def test_stream_rejects_unstreamable_format(client: httpx.AsyncClient) -> None:
    body = {**SYNTH, "stream_format": "audio", "response_format": "flac"}
    response = await client.post("/synthesize/stream", json=body)
    assert response.status_code == 422
    assert "streamable: pcm, wav, mp3, opus" in response.json()["error"]["message"]


async def test_openai_speech(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = {"model": "tts-1", "input": "Hello.", "voice": "aiden", "instructions": "whisper"}
    response = await client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert decode(response.content)[1] == 24_000
    assert engine.requests[-1].instruct == "whisper" and engine.requests[-1].speaker == "aiden"
    response = await client.post("/v1/audio/speech", json={**body, "response_format": "aac"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert (
        error["message"].endswith("supported: wav, flac, mp3, opus, pcm")
        and error["param"] == "response_format"
    )
    response = await client.post("/v1/audio/speech", json={**body, "voice": "alloy"})
    assert response.status_code == 422 and "aiden" in response.json()["error"]["message"]
    response = await client.post("/v1/audio/speech", json={**body, "speed": 1.5})
    assert response.status_code == 422


async def test_openai_sse(client: httpx.AsyncClient) -> None:
    body = {"input": "Hello.", "voice": "serena", "response_format": "pcm", "stream_format": "sse"}
    response = await client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 3 + ["speech.audio.done"]
    assert sum(len(base64.b64decode(e["audio"])) for e in events[:-1]) == 3 * 4800 * 2


async def test_auth(tmp_path, client_factory) -> None:
    settings = make_settings(tmp_path, api_keys=["k1"])
    async with client_factory(settings, FakeEngine()) as client:
        for path in ("/health", "/ready", "/metrics", "/docs", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        response = await client.post("/synthesize", json=SYNTH)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        response = await client.get("/speakers", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        response = await client.post("/synthesize", json=SYNTH, headers={"Authorization": "Bearer k1"})
        assert response.status_code == 200


async def test_cors(tmp_path, client_factory) -> None:
    settings = make_settings(tmp_path, cors_origins=["https://app.example"])
    async with client_factory(settings, FakeEngine()) as client:
        headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        response = await client.options("/synthesize", headers=headers)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        response = await client.post("/synthesize", json=SYNTH, headers={"Origin": "https://app.example"})
        assert "x-sample-rate" in response.headers["access-control-expose-headers"].lower()


async def test_request_size_limit(tmp_path, client_factory) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=1000)
    async with client_factory(settings, FakeEngine()) as client:
        payload = json.dumps({"text": "x" * 3_000_000, "speaker": "ryan"}).encode()
        response = await client.post(
            "/synthesize", content=payload, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413

        async def chunks():  # no Content-Length: counted while read
            for _ in range(40):
                yield b" " * 100_000

        response = await client.post(
            "/synthesize", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413


def test_size_limits_name_the_limit_and_its_setting(tmp_path) -> None:
    """Over real HTTP (uvicorn): each 413 says the limit in a unit a person reads and the setting behind it,
    whether the body is refused by its Content-Length, while it is read, or the clip inside it is too big."""
    setting = "(max_upload_bytes, env QWEN3_TTS_MAX_UPLOAD_BYTES)"
    whole_body = (
        "request body exceeds 1.5 MiB: room for a reference clip of 384 KiB in base64 plus the other "
        f"fields {setting}"
    )
    app = create_app(settings=make_settings(tmp_path, max_upload_bytes=384 * 1024), engine=FakeEngine())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        response = http.post("/synthesize", json={"text": "x" * 2_000_000, "speaker": "ryan"})
        assert (response.status_code, response.json()["error"]["message"]) == (413, whole_body)

        def chunks():  # no Content-Length: counted while read
            for _ in range(20):
                yield b" " * 100_000

        response = http.post("/synthesize", content=chunks(), headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["error"]["message"]) == (413, whole_body)
        files = {"ref_audio": ("ref.wav", clip(10.0), "audio/wav")}  # 480 kB of PCM
        response = http.post("/clone", data={"text": "Hi."}, files=files)
        assert response.status_code == 413
        assert response.json()["error"]["message"] == f"reference audio exceeds 384 KiB {setting}"


@pytest.mark.parametrize("as_form", [False, True], ids=["json", "multipart"])
@pytest.mark.parametrize("path", ["/clone", "/voices"])
async def test_duration_limits_name_the_limit_and_its_setting(
    tmp_path: Path, client_factory: Callable[..., httpx.AsyncClient], path: str, as_form: bool
) -> None:
    """Like the size 413: a clip too short or too long names the limit and the setting that changes it."""
    settings = make_settings(tmp_path, min_ref_audio_seconds=2.5, max_ref_audio_seconds=5.0)
    expected = {
        1.0: (
            400,
            "reference audio is 1.00 s; the minimum is 2.5 s "
            "(min_ref_audio_seconds, env QWEN3_TTS_MIN_REF_AUDIO_SECONDS)",
        ),
        6.0: (
            413,
            "reference audio is longer than 5 s (max_ref_audio_seconds, env QWEN3_TTS_MAX_REF_AUDIO_SECONDS)",
        ),
    }
    async with client_factory(settings, FakeEngine()) as http:
        for seconds, (status, message) in expected.items():
            audio = clip(seconds)
            fields = {"text": "Hi."} if path == "/clone" else {}
            if as_form:
                response = await http.post(
                    path, data=fields, files={"ref_audio": ("ref.wav", audio, "audio/wav")}
                )
            else:
                response = await http.post(
                    path, json={**fields, "ref_audio": base64.b64encode(audio).decode()}
                )
            error = response.json()["error"]
            assert (response.status_code, error["message"], error["param"]) == (status, message, "ref_audio")


async def test_metrics(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    await client.post("/synthesize", json=SYNTH)
    await client.post("/synthesize", json={**SYNTH, "speaker": "nobody"})
    text = (await client.get("/metrics")).text
    assert 'qwen3_tts_gateway_requests_total{method="POST",route="/synthesize",status="200"} 1.0' in text
    assert 'qwen3_tts_gateway_requests_total{method="POST",route="/synthesize",status="422"} 1.0' in text
    assert 'qwen3_tts_gateway_errors_total{route="/synthesize",type="validation_error"} 1.0' in text
    assert 'qwen3_tts_gateway_time_to_first_audio_seconds_count{route="/synthesize"} 1.0' in text
    assert 'qwen3_tts_gateway_real_time_factor_count{route="/synthesize"} 1.0' in text
