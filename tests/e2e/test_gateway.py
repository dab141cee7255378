"""End to end: real HTTP (httpx) and WebSocket clients -> the gateway under uvicorn -> real gRPC -> the
real tritonserver with the project's models (the session fixture ``triton_server`` in tests/conftest.py).

No fakes here. Run with ``pytest tests/e2e/test_gateway.py``.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread
from websockets.sync.client import connect as ws_connect

from gateway.conftest import MODELS, clip, make_settings

pytestmark = pytest.mark.e2e

FINISH_REASONS = {"stop", "length", "repetition"}
SHORT = {"max_new_tokens": 16, "seed": 1234}
SAY = {"text": "Hello from the gateway.", "speaker": "vivian", "language": "english", **SHORT}


@pytest.fixture(scope="module")
def gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(
        tmp_path_factory.mktemp("gateway-e2e"),
        gateway_triton_url=triton_server.grpc_url,
        request_timeout_s=300.0,
        api_keys=["key-a", "key-b"],
    )
    with serve_in_thread(create_app(settings=settings)) as url:
        yield url


@pytest.fixture
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=300, headers={"Authorization": "Bearer key-a"}) as client:
        yield client


def decode(data: bytes) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(data), dtype="float32")


def check_audio_headers(response: httpx.Response, samples: int) -> None:
    assert response.headers["x-sample-rate"] == "24000"
    assert float(response.headers["x-audio-duration"]) == pytest.approx(samples / 24_000, abs=1e-3)
    assert response.headers["x-finish-reason"] in FINISH_REASONS


def test_ready(http: httpx.Client) -> None:
    response = http.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["models"] == dict.fromkeys(MODELS, True)


def test_synthesize_wav(http: httpx.Client) -> None:
    response = http.post("/synthesize", json=SAY)
    assert response.status_code == 200, response.text
    audio, rate = decode(response.content)
    assert rate == 24_000 and len(audio) > 0 and np.all(np.abs(audio) <= 1.0)
    check_audio_headers(response, len(audio))


def test_seed_reproducible(http: httpx.Client) -> None:
    first = http.post("/synthesize", json={**SAY, "response_format": "pcm"})
    second = http.post("/synthesize", json={**SAY, "response_format": "pcm"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content


def test_stream_ndjson(http: httpx.Client) -> None:
    with http.stream("POST", "/synthesize/stream", json={**SAY, "max_new_tokens": 40}) as response:
        assert response.status_code == 200
        *lines, done = [json.loads(line) for line in response.iter_lines() if line]
    assert done["type"] == "done" and done["finish_reason"] == lines[-1]["finish_reason"]
    assert done["chunks"] == len(lines)
    assert [line["sequence"] for line in lines] == list(range(len(lines)))
    assert [line["is_last"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["finish_reason"] in FINISH_REASONS
    assert all(line["sample_rate"] == 24_000 and "error" not in line for line in lines)
    assert sum(len(base64.b64decode(line["audio"])) for line in lines) > 0


def test_stream_raw_pcm_matches_whole_file(http: httpx.Client) -> None:
    body = {**SAY, "stream_format": "audio", "response_format": "pcm"}
    streamed = http.post("/synthesize/stream", json=body)
    whole = http.post("/synthesize", json={**SAY, "response_format": "pcm"})
    assert streamed.status_code == whole.status_code == 200
    assert streamed.content == whole.content  # same seed: same audio, chunked or not


def test_websocket(gateway: str) -> None:
    url = gateway.replace("http://", "ws://") + "/ws/synthesize?api_key=key-a"
    with ws_connect(url, open_timeout=30) as ws:
        ws.send(json.dumps(SAY))
        start = json.loads(ws.recv(timeout=300))
        assert start == {"type": "start", "sample_rate": 24_000, "format": "pcm_s16le", "channels": 1}
        audio = b""
        while isinstance(message := ws.recv(timeout=300), bytes):
            audio += message
        done = json.loads(message)
        assert done["type"] == "done" and done["finish_reason"] in FINISH_REASONS
        assert done["duration"] == pytest.approx(len(audio) / 2 / 24_000, abs=1e-3)
        ws.send(json.dumps({**SAY, "speaker": "nobody"}))
        error = json.loads(ws.recv(timeout=30))
        assert error["type"] == "error" and error["status"] == 422


def test_openai_speech(http: httpx.Client) -> None:
    body = {"model": "qwen3-tts", "input": "Hello.", "voice": "ryan", **SHORT}
    response = http.post("/v1/audio/speech", json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "audio/mpeg"
    assert decode(response.content)[1] == 24_000
    response = http.post("/v1/audio/speech", json={**body, "response_format": "pcm", "stream_format": "sse"})
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    assert {e["type"] for e in events[:-1]} <= {"speech.audio.delta"}


def test_design(http: httpx.Client) -> None:
    body = {"text": "Hello.", "instruct": "A warm, low female voice.", "response_format": "flac", **SHORT}
    response = http.post("/design", json=body)
    assert response.status_code == 200, response.text
    audio, rate = decode(response.content)
    check_audio_headers(response, len(audio))


def test_clone_json_and_multipart(http: httpx.Client) -> None:
    reference = clip(4.0, "mp3", sample_rate=44_100, channels=2)
    body = {
        "text": "Hello.",
        "ref_audio": base64.b64encode(reference).decode(),
        "ref_text": "Some words.",
        **SHORT,
    }
    response = http.post("/clone", json=body)
    assert response.status_code == 200, response.text
    files = {"ref_audio": ("ref.flac", clip(4.0, "flac"), "audio/flac")}
    response = http.post("/clone", data={"text": "Hello.", "x_vector_only": "true", **SHORT}, files=files)
    assert response.status_code == 200, response.text
    response = http.post(
        "/clone", files={"ref_audio": ("r.wav", clip(1.0), "audio/wav")}, data={"text": "Hi"}
    )
    assert response.status_code == 400 and "minimum is 3 s" in response.json()["error"]["message"]


def test_voice_library(http: httpx.Client, gateway: str) -> None:
    created = http.post(
        "/voices",
        json={"name": "e2e", "ref_audio": base64.b64encode(clip(4.0)).decode(), "ref_text": "Words."},
    )
    assert created.status_code == 201, created.text
    voice = created.json()
    speech = {
        "input": "Reusing the stored prompt.",
        "voice": voice["voice"],
        "response_format": "wav",
        **SHORT,
    }
    response = http.post("/v1/audio/speech", json=speech)
    assert response.status_code == 200, response.text
    assert decode(response.content)[1] == 24_000
    stream = http.post("/synthesize/stream", json={"text": "Again.", "voice": voice["voice"], **SHORT})
    assert stream.status_code == 200 and json.loads(stream.text.splitlines()[-2])["is_last"]
    with httpx.Client(base_url=gateway, headers={"Authorization": "Bearer key-b"}, timeout=60) as other:
        assert other.get(f"/voices/{voice['id']}").status_code == 404
        assert other.post("/v1/audio/speech", json=speech).status_code == 404
    assert http.delete(f"/voices/{voice['id']}").status_code == 204
    assert http.post("/v1/audio/speech", json=speech).status_code == 404


def test_disconnect_closes_the_triton_stream(http: httpx.Client) -> None:
    long_text = "This sentence keeps the model busy for a while. " * 20
    body = {"text": long_text, "speaker": "ryan", "max_new_tokens": 2000, "seed": 5}
    with http.stream("POST", "/synthesize/stream", json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "qwen3_tts_gateway_active_streams 0.0" in http.get("/metrics").text:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the gateway kept the Triton stream open after the client left")
    assert http.post("/synthesize", json=SAY).status_code == 200  # the server is still healthy


def test_concurrent_requests(http: httpx.Client) -> None:
    def say(seed: int) -> int:
        return http.post("/synthesize", json={**SAY, "seed": seed, "response_format": "pcm"}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(say, range(4))) == [200] * 4


def test_openai_sdk(gateway: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="key-a", max_retries=0)
    response = client.audio.speech.create(
        model="qwen3-tts", voice="aiden", input="Hello.", response_format="flac", extra_body=SHORT
    )
    audio, rate = decode(response.content)
    assert rate == 24_000 and len(audio) > 0
    with client.audio.speech.with_streaming_response.create(
        model="qwen3-tts", voice="aiden", input="Hello.", response_format="pcm", extra_body=SHORT
    ) as streamed:
        assert len(b"".join(streamed.iter_bytes())) > 0


def test_an_overloaded_model_answers_503_with_retry_after_and_serves_the_rest(
    serving_settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Its own Triton: one slot and one place in the queue, so four requests at once cannot all fit.
    from qwen3_tts_serving.launcher import TritonServer, build_model_repository

    work = tmp_path_factory.mktemp("overload")
    triton_settings = serving_settings.model_copy(update={"max_active_streams": 1, "max_queued_streams": 1})
    repository = build_model_repository(triton_settings, work / "repo", ["custom_voice"])
    with TritonServer(repository, triton_settings, log_path=work / "tritonserver.log") as triton:
        settings = make_settings(work, gateway_triton_url=triton.grpc_url, request_timeout_s=120.0)
        with (
            serve_in_thread(create_app(settings=settings)) as url,
            httpx.Client(base_url=url, timeout=120) as http,
        ):
            body = {**SAY, "max_new_tokens": 40}
            with ThreadPoolExecutor(4) as pool:
                responses = list(pool.map(lambda _: http.post("/synthesize", json=body), range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, [r.text for r in responses]
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "7"
            assert "overloaded" in response.json()["error"]["message"]
        else:
            assert decode(response.content)[0].size > 0
