"""The official OpenAI Python SDK against the gateway's /v1/audio/speech (real HTTP via uvicorn).

Routing only: the fake engine (see fakes.py) stands in for Triton; tests/e2e/test_gateway.py repeats the
happy path against the real server.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread
from qwen3_tts_gateway.errors import EngineUnavailableError

from .conftest import make_settings
from .fakes import FakeEngine

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def sdk(engine: FakeEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    settings = make_settings(tmp_path_factory.mktemp("openai"), api_keys=["sk-test"])
    with serve_in_thread(create_app(settings=settings, engine=engine)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)


def test_speech_create(sdk, engine: FakeEngine) -> None:
    response = sdk.audio.speech.create(
        model="qwen3-tts",
        voice="vivian",
        input="Hello.",
        instructions="softly",
        response_format="wav",
        extra_body={"language": "english", "seed": 3},
    )
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == 24_000 and len(audio) == 3 * 4800
    request = engine.requests[-1]
    assert (request.speaker, request.instruct, request.language, request.sampling.seed) == (
        "vivian", "softly", "english", 3
    )  # fmt: skip


def test_streaming_response(sdk, tmp_path: Path) -> None:
    with sdk.audio.speech.with_streaming_response.create(
        model="qwen3-tts", voice="ryan", input="Hello.", response_format="pcm"
    ) as response:
        data = b"".join(response.iter_bytes())
    assert len(data) == 3 * 4800 * 2
    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="ryan", input="Hi."
    ) as response:
        response.stream_to_file(tmp_path / "out.mp3")
    assert sf.info(str(tmp_path / "out.mp3")).samplerate == 24_000


def test_errors_map_to_sdk_exceptions(sdk, engine: FakeEngine) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert "vivian" in str(invalid.value)
    with pytest.raises(openai.UnprocessableEntityError, match="supported: wav, flac, mp3, opus, pcm"):
        sdk.audio.speech.create(model="tts-1", voice="ryan", input="Hi.", response_format="aac")
    engine.error = EngineUnavailableError("the model server is overloaded; retry later")
    try:
        with pytest.raises(openai.InternalServerError) as overloaded:
            sdk.audio.speech.create(model="tts-1", voice="ryan", input="Hi.")
        assert overloaded.value.status_code == 503
        assert overloaded.value.response.headers["retry-after"] == "7"
    finally:
        engine.error = None
    unauthenticated = openai.OpenAI(base_url=str(sdk.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        unauthenticated.audio.speech.create(model="tts-1", voice="ryan", input="Hi.")
