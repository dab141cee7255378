"""Qwen3TTSProvider against a real local HTTP server: routing, breaker, metrics, catalog, health, cost."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qwen3_tts_client import (
    AsyncQwen3TTSClient,
    CircuitOpenError,
    CircuitState,
    Qwen3TTSError,
    UnknownVoiceError,
)
from qwen3_tts_client.provider import Qwen3TTSProvider
from qwen3_tts_client.routing import TIMBRES
from qwen3_tts_client.settings import ProviderSettings

from .servers import Reply, ScriptedServer, error_reply, ndjson_reply, refused_url
from .test_breaker import FakeClock

WAV = Reply(200, b"RIFF-not-really", {"Content-Type": "audio/wav", "X-Sample-Rate": "24000"})


def make_provider(url: str, clock: FakeClock | None = None, **overrides: object) -> Qwen3TTSProvider:
    values: dict[str, object] = {"base_url": url, "max_retries": 0, "timeout_s": 5.0, **overrides}
    return Qwen3TTSProvider(settings=ProviderSettings(**values), clock=clock or FakeClock())  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- settings & cost


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3_TTS_PROVIDER_BASE_URL", "http://tts.internal:9000/")
    monkeypatch.setenv("QWEN3_TTS_PROVIDER_PRICE_PER_CHARACTER", "0.00002")
    monkeypatch.setenv("QWEN3_TTS_PROVIDER_FAILURE_THRESHOLD", "5")
    monkeypatch.setenv("QWEN3_TTS_PROVIDER_COOLDOWN_S", "12.5")
    provider_settings = ProviderSettings()
    assert provider_settings.base_url == "http://tts.internal:9000"
    assert provider_settings.price_per_character == 0.00002
    assert provider_settings.failure_threshold == 5
    assert provider_settings.cooldown_s == 12.5


def test_estimate_cost() -> None:
    provider = Qwen3TTSProvider(settings=ProviderSettings(price_per_character=0.001, price_per_second=0.01))
    assert provider.estimate_cost(text="hello") == pytest.approx(0.005)
    assert provider.estimate_cost(seconds=30) == pytest.approx(0.3)
    assert provider.estimate_cost(text="hello", seconds=30) == pytest.approx(0.305)
    assert provider.estimate_cost(text="") == 0.0
    assert provider.currency == "USD"


@pytest.mark.parametrize("kwargs", [{}, {"seconds": -1.0}, {"seconds": float("nan")}])
def test_estimate_cost_rejects_bad_input(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Qwen3TTSProvider(settings=ProviderSettings()).estimate_cost(**kwargs)


def test_negative_prices_are_refused() -> None:
    with pytest.raises(ValueError):
        ProviderSettings(price_per_character=-1)


# --------------------------------------------------------------------------------------- routing


async def test_premium_voice_goes_to_synthesize_with_the_timbre(scripted: ScriptedServer) -> None:
    scripted.script(WAV)
    async with make_provider(scripted.url) as provider:
        result = await provider.synthesize("Hello.", voice_id="qwen3-vivian", instruct="cheerful", seed=7)
    assert result.audio == b"RIFF-not-really" and result.sample_rate == 24000
    request = scripted.requests[0]
    assert (request.method, request.path) == ("POST", "/synthesize")
    assert request.json() == {
        "text": "Hello.",
        "voice": "vivian",
        "language": "auto",
        "instruct": "cheerful",
        "response_format": "wav",
        "seed": 7,
    }


async def test_clone_voice_goes_to_the_voice_library(scripted: ScriptedServer) -> None:
    scripted.script(WAV)
    async with make_provider(scripted.url) as provider:
        await provider.synthesize("Hi.", voice_id="qwen3-clone-0123456789abcdef", language="english")
    assert scripted.requests[0].json()["voice"] == "qwen3-clone-0123456789abcdef"
    assert scripted.requests[0].json()["language"] == "english"


async def test_foreign_voice_is_refused_before_any_request(scripted: ScriptedServer) -> None:
    async with make_provider(scripted.url) as provider:
        assert provider.supports("qwen3-ryan") and not provider.supports("openai-alloy")
        with pytest.raises(UnknownVoiceError):
            await provider.synthesize("Hi.", voice_id="openai-alloy")
        with pytest.raises(ValueError, match="built-in timbres"):
            await provider.synthesize("Hi.", voice_id="qwen3-clone-abc", instruct="sad")
    assert scripted.requests == []


async def test_stream_through_the_provider(scripted: ScriptedServer) -> None:
    scripted.script(ndjson_reply([np.full(240, 0.25, np.float32), np.full(120, -0.5, np.float32)]))
    async with make_provider(scripted.url) as provider:
        chunks = [chunk async for chunk in provider.stream("Hi.", voice_id="qwen3-aiden")]
        assert [c.sequence for c in chunks] == [0, 1] and chunks[-1].is_last
        assert chunks[0].audio.dtype == np.float32
        assert np.allclose(chunks[1].audio, -0.5, atol=1e-3)
        assert provider.metrics.snapshot()["requests_by_operation"] == {"stream_premium": 1}
    assert scripted.requests[0].path == "/synthesize/stream"


# --------------------------------------------------------------------------------------- breaker


async def test_breaker_opens_fails_fast_and_recovers(scripted: ScriptedServer) -> None:
    clock = FakeClock()
    scripted.script(*[error_reply(503, "overloaded", **{"Retry-After": "0"}) for _ in range(3)])
    async with make_provider(scripted.url, clock) as provider:
        for _ in range(3):
            with pytest.raises(Qwen3TTSError) as caught:
                await provider.synthesize("Hi.", voice_id="qwen3-ryan")
            assert caught.value.status_code == 503 and caught.value.message == "overloaded"
        assert provider.breaker.state is CircuitState.OPEN and not provider.available

        with pytest.raises(CircuitOpenError):
            await provider.synthesize("Hi.", voice_id="qwen3-ryan")
        assert len(scripted.requests) == 3  # failed fast: the gateway never saw the 4th call

        health = await provider.health_check()
        assert health.status == "unavailable" and not health.available
        assert len(scripted.requests) == 3

        clock.advance(30)
        assert provider.breaker.state is CircuitState.HALF_OPEN
        scripted.script(WAV)
        await provider.synthesize("Hi.", voice_id="qwen3-ryan")  # the probe succeeds
        assert provider.breaker.state is CircuitState.CLOSED

        snapshot = provider.metrics.snapshot()
        assert snapshot["requests"] == 4 and snapshot["failures"] == 3 and snapshot["rejected"] == 2
        assert snapshot["failures_by_error"] == {"ServiceUnavailableError": 3}
        assert snapshot["latency_seconds"]["count"] == 4


async def test_connection_refused_opens_the_breaker() -> None:
    async with make_provider(refused_url(), failure_threshold=2) as provider:
        for _ in range(2):
            with pytest.raises(Qwen3TTSError) as caught:
                await provider.synthesize("Hi.", voice_id="qwen3-ryan")
            assert caught.value.status_code is None
        assert not provider.available


async def test_client_errors_do_not_open_the_breaker(scripted: ScriptedServer) -> None:
    scripted.script(*[error_reply(422, "unknown speaker 'bob'") for _ in range(5)])
    async with make_provider(scripted.url, failure_threshold=1) as provider:
        for _ in range(5):
            with pytest.raises(Qwen3TTSError):
                await provider.synthesize("Hi.", voice_id="qwen3-bob")
        assert provider.available and provider.metrics.total_failures == 5


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.integers(400, 599), message=st.text(min_size=1, max_size=40).filter(str.strip))
async def test_provider_errors_keep_status_and_message(
    scripted: ScriptedServer, status: int, message: str
) -> None:
    scripted.replies.clear()
    scripted.script(error_reply(status, message))
    client = AsyncQwen3TTSClient(base_url=scripted.url, max_retries=0)
    provider = Qwen3TTSProvider(client=client, clock=FakeClock())
    try:
        with pytest.raises(Qwen3TTSError) as caught:
            await provider.synthesize("Hi.", voice_id="qwen3-vivian")
    finally:
        await client.aclose()
    assert caught.value.status_code == status
    assert caught.value.message == message


# --------------------------------------------------------------------------------------- catalog & health


async def test_available_voices_lists_timbres_clones_and_languages(scripted: ScriptedServer) -> None:
    scripted.route(
        "GET",
        "/speakers",
        Reply(200, {"speakers": [{"name": "vivian", "description": "Bright", "native_language": "chinese"}]}),
    )
    voices = {"voices": [{"id": "0123456789abcdef", "name": "Me", "ref_text": "hi", "duration_s": 4.0}]}
    scripted.route("GET", "/voices", Reply(200, voices))
    languages = {"languages": [{"code": "auto", "name": "Auto"}, {"code": "english", "name": "English"}]}
    scripted.route("GET", "/languages", Reply(200, languages))
    async with make_provider(scripted.url) as provider:
        catalog = await provider.available_voices()
    assert catalog.complete
    assert [(v.voice_id, v.kind) for v in catalog.voices] == [
        ("qwen3-vivian", "premium"),
        ("qwen3-clone-0123456789abcdef", "clone"),
    ]
    assert catalog.voices[0].language == "chinese" and catalog.voices[1].name == "Me"
    assert catalog.languages == ["auto", "english"]


async def test_available_voices_falls_back_to_the_builtin_timbres() -> None:
    async with make_provider(refused_url()) as provider:
        catalog = await provider.available_voices()
    assert not catalog.complete
    assert [v.voice_id for v in catalog.voices] == [f"qwen3-{t}" for t in TIMBRES]
    assert "english" in catalog.languages


async def test_health_check_ready(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, {"ready": True, "server": True, "models": {"custom_voice": True}}))
    async with make_provider(scripted.url) as provider:
        health = await provider.health_check()
    assert health.available and health.status == "healthy" and health.circuit == "closed"
    assert health.latency_s is not None and health.metrics["requests"] == 1


async def test_health_check_not_ready_counts_as_a_failure(scripted: ScriptedServer) -> None:
    not_ready = Reply(
        503, {"ready": False, "server": True, "models": {"voice_clone": False}}, {"Retry-After": "2"}
    )
    scripted.route("GET", "/ready", not_ready)
    async with make_provider(scripted.url, failure_threshold=2) as provider:
        first = await provider.health_check()
        assert first.status == "degraded" and not first.available
        assert "voice_clone" in (first.detail or "")
        second = await provider.health_check()
        assert second.status == "unavailable" and second.circuit == "open"
    assert len(scripted.requests) == 2  # probes are not retried
