"""The client against the real gateway app (``create_app``) served by uvicorn over real HTTP.

Only the inference engine is replaced, by ``ToneEngine`` below, so these tests run without Triton and
pin the contract between the two packages: field names the gateway accepts (it forbids unknown fields),
response headers, NDJSON lines, error bodies, Retry-After, auth and the voice library. The same calls
against the real Triton are in tests/e2e/test_python_client.py.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("qwen3_tts_gateway.app")

from qwen3_tts_client import (
    APITimeoutError,
    AsyncQwen3TTSClient,
    AuthenticationError,
    BadRequestError,
    GatewayTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    Qwen3TTSClient,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from qwen3_tts_client.provider import Qwen3TTSProvider
from qwen3_tts_client.retry import RetryPolicy
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.backend import ALL_MODELS, AudioChunk, SynthesisRequest, VoicePrompt
from qwen3_tts_gateway.embedded import serve_in_thread
from qwen3_tts_gateway.errors import EngineUnavailableError, UpstreamTimeoutError

from gateway.conftest import gateway_settings, wait_until

RATE = 24_000


@dataclass
class ToneEngine:
    """Implements the gateway's TTSEngine protocol with sine chunks; errors are scripted per test."""

    chunks: int = 3
    samples: int = 2400
    error: Exception | None = None
    error_at: int = 0
    prompt_delay_s: float = 0.0
    prompts: int = 0
    requests: list[SynthesisRequest] = field(default_factory=list)

    async def ready(self) -> bool:
        return True

    async def model_ready(self, name: str) -> bool:
        return True

    async def served_models(self) -> tuple[str, ...]:
        return ALL_MODELS

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        self.requests.append(request)
        for index in range(self.chunks):
            if self.error is not None and index == self.error_at:
                raise self.error
            t = np.arange(index * self.samples, (index + 1) * self.samples) / RATE
            audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
            last = index == self.chunks - 1
            yield AudioChunk(audio, RATE, index, last, "stop" if last else "")

    async def create_voice_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None, x_vector_only: bool
    ) -> VoicePrompt:
        self.prompts += 1
        await asyncio.sleep(self.prompt_delay_s)
        frames = 0 if x_vector_only or not ref_text else 4
        codes = np.zeros((frames, 16), np.int64)
        return VoicePrompt(np.ones(16, np.float32), codes, ref_text, x_vector_only)

    async def close(self) -> None:
        return None


def reference_clip(seconds: float = 4.0, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


@dataclass
class Gateway:
    url: str
    engine: ToneEngine


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    engine = ToneEngine()
    cache = tmp_path_factory.mktemp("contract")
    settings = gateway_settings("127.0.0.1:1", cache, retry_after_s=0, max_upload_bytes=2_000_000)
    with serve_in_thread(create_app(settings=settings, engine=engine)) as url:
        yield Gateway(url, engine)


@pytest.fixture
def engine(gateway: Gateway) -> ToneEngine:
    gateway.engine.__init__()  # type: ignore[misc]  # a fresh script for every test
    return gateway.engine


@pytest.fixture
def client(gateway: Gateway, engine: ToneEngine) -> Iterator[Qwen3TTSClient]:
    with Qwen3TTSClient(base_url=gateway.url, max_retries=0, timeout=10) as http:
        yield http


# --------------------------------------------------------------------------------------- synthesis


def test_speak_returns_audio_and_metadata(client: Qwen3TTSClient, engine: ToneEngine) -> None:
    result = client.speak("Hello there.", voice="Vivian", language="en", instruct="warm")
    assert result.format == "wav" and result.content_type.startswith("audio/wav")
    assert result.sample_rate == RATE and result.finish_reason == "stop"
    assert result.duration == pytest.approx(3 * 2400 / RATE, abs=1e-3)
    audio, rate = result.to_numpy()
    assert rate == RATE and len(audio) == 3 * 2400
    request = engine.requests[0]
    assert (request.model, request.speaker, request.language, request.instruct) == (
        "custom_voice",
        "vivian",
        "english",
        "warm",
    )


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "pcm"])
def test_every_format(client: Qwen3TTSClient, fmt: str) -> None:
    result = client.speak("Hi.", speaker="ryan", response_format=fmt)
    audio, rate = result.to_numpy()
    assert rate in (RATE, 48_000) and len(audio) > 0


def test_sampling_options_are_accepted(client: Qwen3TTSClient, engine: ToneEngine) -> None:
    options = {
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "max_new_tokens": 200,
        "seed": 1234,
    }
    client.speak("Hi.", voice="aiden", **options)  # type: ignore[arg-type]
    sampling = engine.requests[0].sampling
    assert {name: getattr(sampling, name) for name in options} == pytest.approx(options)


def test_unknown_voice_lists_the_valid_ones(client: Qwen3TTSClient) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        client.speak("Hi.", voice="bob")
    assert caught.value.status_code == 422
    assert "vivian" in caught.value.message and "bob" in caught.value.message


def test_typo_in_a_sampling_option_fails_locally(client: Qwen3TTSClient) -> None:
    with pytest.raises(TypeError, match="temprature"):
        client.speak("Hi.", voice="vivian", temprature=0.5)  # type: ignore[call-arg]


def test_design(client: Qwen3TTSClient, engine: ToneEngine) -> None:
    result = client.design("Welcome.", instruct="a calm low voice", response_format="flac")
    assert result.to_numpy()[1] == RATE
    assert (engine.requests[0].model, engine.requests[0].instruct) == ("voice_design", "a calm low voice")


def test_clone_from_bytes_and_from_an_array(
    client: Qwen3TTSClient, engine: ToneEngine, tmp_path: Path
) -> None:
    client.clone("Hi.", reference_audio=reference_clip(), ref_text="a transcript")
    t = np.arange(4 * 22_050) / 22_050
    client.clone("Hi.", reference_audio=(0.2 * np.sin(t * 900), 22_050), x_vector_only=True)
    path = tmp_path / "ref.wav"
    path.write_bytes(reference_clip())
    client.clone("Hi.", reference_audio=path)
    first, second, third = engine.requests
    assert first.model == "voice_clone" and first.ref_text == "a transcript" and first.ref_sample_rate == RATE
    assert second.x_vector_only is True
    assert third.ref_audio is not None


def test_short_reference_is_a_bad_request(client: Qwen3TTSClient) -> None:
    with pytest.raises(BadRequestError, match="minimum"):
        client.clone("Hi.", reference_audio=reference_clip(seconds=1.0))


def test_oversized_reference_is_413(client: Qwen3TTSClient) -> None:
    with pytest.raises(PayloadTooLargeError):
        client.clone("Hi.", reference_audio=reference_clip(seconds=29.0, rate=48_000))


# --------------------------------------------------------------------------------------- streaming


def test_stream_chunks(client: Qwen3TTSClient) -> None:
    chunks = list(client.stream("Hello.", voice="serena"))
    assert [c.sequence for c in chunks] == [0, 1, 2]
    assert [c.is_last for c in chunks] == [False, False, True]
    assert chunks[-1].finish_reason == "stop" and chunks[0].finish_reason is None
    assert all(c.sample_rate == RATE and c.audio.dtype == np.float32 and len(c.audio) == 2400 for c in chunks)
    assert len(chunks[0].pcm16()) == 4800


def test_stream_collect(client: Qwen3TTSClient) -> None:
    audio, rate, reason = client.stream("Hello.", voice="serena").collect()
    assert len(audio) == 7200 and rate == RATE and reason == "stop"


def test_error_before_the_first_chunk_is_a_status(client: Qwen3TTSClient, engine: ToneEngine) -> None:
    engine.error = EngineUnavailableError("the model server is out of memory; retry later")
    with pytest.raises(ServiceUnavailableError) as caught:
        list(client.stream("Hello.", voice="serena"))
    assert caught.value.retry_after == 0.0  # Retry-After from the gateway's settings


def test_error_mid_stream_arrives_in_band(client: Qwen3TTSClient, engine: ToneEngine) -> None:
    engine.error, engine.error_at = UpstreamTimeoutError("synthesis did not finish in time"), 1
    chunks = client.stream("Hello.", voice="serena")
    assert next(chunks).sequence == 0
    with pytest.raises(GatewayTimeoutError, match="did not finish"):
        next(chunks)


def test_overload_is_retried_then_reported(gateway: Gateway, engine: ToneEngine) -> None:
    engine.error = EngineUnavailableError("the model server is overloaded; retry later")
    with (
        Qwen3TTSClient(base_url=gateway.url, max_retries=2) as retrying,
        pytest.raises(ServiceUnavailableError),
    ):
        retrying.speak("Hi.", voice="vivian")
    assert len(engine.requests) == 3


async def test_async_stream(gateway: Gateway, engine: ToneEngine) -> None:
    async with AsyncQwen3TTSClient(base_url=gateway.url, max_retries=0) as client:
        chunks = [chunk async for chunk in client.stream("Hello.", voice="dylan")]
        assert [c.sequence for c in chunks] == [0, 1, 2]
        result = await client.speak("Hello.", voice="dylan", response_format="pcm")
        assert len(result.to_numpy()[0]) == 7200


# --------------------------------------------------------------------------------------- voice library


def test_voice_library_round_trip(client: Qwen3TTSClient, engine: ToneEngine) -> None:
    voice = client.create_voice(reference_clip(), ref_text="the transcript", name="Me")
    assert len(voice.id) == 16 and voice.model_id == f"qwen3-clone-{voice.id}"
    assert (
        voice.name == "Me" and voice.ref_text == "the transcript" and voice.duration_s == pytest.approx(4.0)
    )
    assert voice.id in [v.id for v in client.list_voices()]
    assert client.get_voice(voice.model_id).id == voice.id  # the model id works as well as the bare id

    client.speak("In my voice.", voice=voice.model_id)
    assert engine.requests[-1].model == "voice_clone" and engine.requests[-1].voice_prompt is not None

    client.delete_voice(voice.id)
    with pytest.raises(NotFoundError):
        client.get_voice(voice.id)
    with pytest.raises(NotFoundError):
        client.speak("Gone.", voice=voice.model_id)


def test_a_voice_is_not_stored_twice_after_a_timeout(gateway: Gateway, engine: ToneEngine) -> None:
    """POST /voices stores a voice: sent again after the gateway may have received it (a read timeout),
    it would store the voice once per attempt."""
    engine.prompt_delay_s = 0.5
    policy = RetryPolicy(max_retries=2, backoff_base=0.0, jitter=0.0)
    with Qwen3TTSClient(base_url=gateway.url, retry_policy=policy, timeout=0.2) as impatient:
        before = len(impatient.list_voices())
        with pytest.raises(APITimeoutError):
            impatient.create_voice(reference_clip(), ref_text="the transcript")
        assert wait_until(lambda: len(impatient.list_voices()) > before)
        time.sleep(1.0)  # time for any further attempt to be stored too
        assert len(impatient.list_voices()) == before + 1
    assert engine.prompts == 1


@pytest.mark.parametrize("suffix", ["?owner=x", "#fragment", "%2F..", ""])
def test_a_voice_id_never_changes_the_url(client: Qwen3TTSClient, suffix: str) -> None:
    """A voice id is one path segment, whatever it holds: "?" or "#" must not cut it short (so that
    deleting "<id>?x" deleted <id>, and deleting "?" reported success after a redirect), nor may a
    percent sign or dots change where the request goes."""
    voice = client.create_voice(reference_clip(), ref_text="the transcript")
    odd = voice.id + suffix if suffix else ".."
    with pytest.raises(NotFoundError if suffix else ValueError):
        client.get_voice(odd)
    for bare in ("?", "#"):
        with pytest.raises(NotFoundError):
            client.delete_voice(bare)
    with pytest.raises(NotFoundError if suffix else ValueError):
        client.delete_voice(odd)
    assert client.get_voice(voice.id).id == voice.id


# --------------------------------------------------------------------------------------- catalog, auth


def test_catalog_and_health(client: Qwen3TTSClient) -> None:
    speakers = client.speakers()
    assert len(speakers) == 9 and {"vivian", "uncle_fu"} <= {s.name for s in speakers}
    assert all(s.description and s.native_language for s in speakers)
    languages = client.languages()
    assert languages[0].code == "auto" and "english" in {lang.code for lang in languages}
    assert client.health().ok
    ready = client.ready()
    assert ready.ok and ready.status == "ready"


async def test_provider_over_the_gateway(gateway: Gateway, engine: ToneEngine) -> None:
    client = AsyncQwen3TTSClient(base_url=gateway.url, max_retries=0)
    async with Qwen3TTSProvider(client=client) as provider:
        catalog = await provider.available_voices()
        assert catalog.complete and "qwen3-uncle_fu" in [v.voice_id for v in catalog.voices]
        result = await provider.synthesize("Hi.", voice_id="qwen3-uncle_fu")
        assert result.sample_rate == RATE
        assert (await provider.health_check()).status == "healthy"
    await client.aclose()


def test_api_keys(tmp_path: Path) -> None:
    settings = gateway_settings("127.0.0.1:1", tmp_path, api_keys=["right-key"])
    with serve_in_thread(create_app(settings=settings, engine=ToneEngine())) as url:
        with Qwen3TTSClient(base_url=url, max_retries=0) as anonymous, pytest.raises(AuthenticationError):
            anonymous.speakers()
        with Qwen3TTSClient(base_url=url, api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(AuthenticationError, match="invalid API key"):
                wrong.speakers()
        with Qwen3TTSClient(base_url=url, api_key="right-key") as right:
            assert len(right.speakers()) == 9
            assert right.health().ok


def test_api_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = gateway_settings("127.0.0.1:1", tmp_path, api_keys=["env-key"])
    with serve_in_thread(create_app(settings=settings, engine=ToneEngine())) as url:
        monkeypatch.setenv("QWEN3_TTS_BASE_URL", url)
        monkeypatch.setenv("QWEN3_TTS_API_KEY", "env-key")
        with Qwen3TTSClient() as client:
            assert len(client.languages()) > 1
