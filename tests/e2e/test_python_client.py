"""End to end, no fakes: the client, the provider and the CLI -> the real gateway under uvicorn ->
gRPC -> the real tritonserver with the project's models (``triton_server`` from tests/conftest.py,
``gateway_server`` from tests/e2e/conftest.py); and ``TritonTTSClient`` straight to Triton.

Run with ``pytest tests/e2e/test_python_client.py``. Requests are kept short (``max_new_tokens``) so the
tiny CPU checkpoints answer in seconds; a real checkpoint set (QWEN3_TTS_CHECKPOINT_DIR) works the same way.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from qwen3_tts_client import (
    AsyncQwen3TTSClient,
    NotFoundError,
    Qwen3TTSClient,
    UnprocessableEntityError,
)
from qwen3_tts_client.provider import Qwen3TTSProvider
from qwen3_tts_client.settings import ProviderSettings
from qwen3_tts_client.triton import TritonTTSClient

pytestmark = pytest.mark.e2e

FINISH_REASONS = {"stop", "length", "repetition"}
SHORT: dict[str, Any] = {"max_new_tokens": 16, "seed": 1234}
RATE = 24_000


def reference(seconds: float = 4.0, rate: int = 16_000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    ), rate


@pytest.fixture
def client(gateway_server: Any) -> Iterator[Qwen3TTSClient]:
    with Qwen3TTSClient(base_url=gateway_server.url, timeout=300, max_retries=1) as http:
        yield http


@pytest.fixture
def triton(triton_server: Any) -> Iterator[TritonTTSClient]:
    with TritonTTSClient(triton_server.grpc_url, timeout_s=300) as direct:
        yield direct


# --------------------------------------------------------------------------------------- gateway client


def test_ready(client: Qwen3TTSClient) -> None:
    status = client.ready()
    assert status.ok, status.details
    assert client.health().ok


def test_speak(client: Qwen3TTSClient) -> None:
    result = client.speak("Hello from the client.", voice="vivian", language="english", **SHORT)
    audio, rate = result.to_numpy()
    assert rate == RATE and len(audio) > 0 and np.all(np.abs(audio) <= 1.0)
    assert result.sample_rate == RATE and result.finish_reason in FINISH_REASONS
    assert result.duration == pytest.approx(len(audio) / RATE, abs=1e-3)


def test_seed_makes_speech_reproducible(client: Qwen3TTSClient) -> None:
    first = client.speak("Same words.", voice="ryan", response_format="pcm", **SHORT)
    second = client.speak("Same words.", voice="ryan", response_format="pcm", **SHORT)
    assert first.audio == second.audio


def test_stream(client: Qwen3TTSClient) -> None:
    chunks = list(client.stream("Streaming words.", voice="serena", **SHORT))
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].is_last and chunks[-1].finish_reason in FINISH_REASONS
    assert all(c.sample_rate == RATE and c.audio.dtype == np.float32 for c in chunks)


def test_stream_closed_early_leaves_the_server_usable(client: Qwen3TTSClient) -> None:
    with client.stream(
        "A longer sentence that we stop listening to.", voice="aiden", max_new_tokens=64
    ) as chunks:
        next(chunks)
    assert client.speak("Still here.", voice="aiden", **SHORT).audio


def test_unknown_voice_is_422_naming_the_valid_ones(client: Qwen3TTSClient) -> None:
    with pytest.raises(UnprocessableEntityError, match="vivian"):
        client.speak("Hi.", voice="nobody", **SHORT)


def test_design(client: Qwen3TTSClient) -> None:
    result = client.design("Designed voice.", instruct="a calm, low male voice", **SHORT)
    assert result.to_numpy()[1] == RATE


def test_clone_one_off(client: Qwen3TTSClient) -> None:
    result = client.clone(
        "Cloned words.", reference_audio=reference(), ref_text="Some reference words.", **SHORT
    )
    assert len(result.to_numpy()[0]) > 0


def test_voice_library(client: Qwen3TTSClient) -> None:
    voice = client.create_voice(reference(), ref_text="Some reference words.", name="e2e")
    try:
        assert voice.id in {v.id for v in client.list_voices()}
        result = client.speak("In the saved voice.", voice=voice.model_id, **SHORT)
        assert result.sample_rate == RATE
    finally:
        client.delete_voice(voice.id)
    with pytest.raises(NotFoundError):
        client.get_voice(voice.id)


async def test_async_client(gateway_server: Any) -> None:
    async with AsyncQwen3TTSClient(base_url=gateway_server.url, timeout=300) as client:
        chunks = [chunk async for chunk in client.stream("Async words.", voice="dylan", **SHORT)]
        assert chunks[-1].is_last
        assert (await client.speak("Async.", voice="dylan", **SHORT)).sample_rate == RATE


async def test_provider(gateway_server: Any) -> None:
    settings = ProviderSettings(base_url=gateway_server.url, timeout_s=300, price_per_second=0.01)
    async with Qwen3TTSProvider(settings=settings) as provider:
        assert (await provider.health_check()).status == "healthy"
        catalog = await provider.available_voices()
        assert catalog.complete and "qwen3-vivian" in {v.voice_id for v in catalog.voices}
        result = await provider.synthesize("Provider words.", voice_id="qwen3-vivian", **SHORT)
        assert provider.estimate_cost(seconds=result.duration) >= 0
        assert provider.metrics.snapshot()["failures"] == 0


def test_cli_speak_long_text(gateway_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "cli.wav"
    command = [sys.executable, "-m", "qwen3_tts_client.cli", "--base-url", gateway_server.url, "speak"]
    command += ["First sentence. Second one! Third?", "--max-chars", "16", "-o", str(out)]
    command += ["--max-new-tokens", "16", "--seed", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "3/3 pieces" in result.stderr
    audio, rate = sf.read(io.BytesIO(out.read_bytes()), dtype="float32")
    assert rate == RATE and len(audio) > 0


# --------------------------------------------------------------------------------------- Triton direct


def test_triton_stream(triton: TritonTTSClient) -> None:
    assert triton.is_ready("custom_voice")
    chunks = list(triton.stream("Direct to Triton.", speaker="vivian", language="english", **SHORT))
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].is_last and chunks[-1].finish_reason in FINISH_REASONS
    assert all(c.sample_rate == RATE and np.all(np.abs(c.audio) <= 1.0) for c in chunks)


def test_triton_bad_speaker_is_invalid_argument(triton: TritonTTSClient) -> None:
    with pytest.raises(UnprocessableEntityError, match="vivian") as info:
        list(triton.stream("Hi.", speaker="nobody", **SHORT))
    # A refusal is final: not retried (the client's default policy retries connection errors and 5xx).
    assert info.value.request is not None and info.value.request.attempt == 0
    assert triton.stream("Still fine.", speaker="vivian", **SHORT).collect()[1] == RATE


def test_triton_design(triton: TritonTTSClient) -> None:
    audio, rate, reason = triton.stream_design(
        "Designed.", instruct="a bright young voice", **SHORT
    ).collect()
    assert rate == RATE and reason in FINISH_REASONS


def test_triton_clone_and_voice_prompt(triton: TritonTTSClient) -> None:
    samples, rate = reference()
    audio, out_rate, _ = triton.stream_clone("Cloned.", reference_audio=(samples, rate), **SHORT).collect()
    assert out_rate == RATE and len(audio) > 0
    prompt = triton.voice_prompt((samples, rate), ref_text="Some reference words.")
    assert prompt.speaker_embedding.ndim == 1 and prompt.ref_codes.shape[1] == 16
    audio, out_rate, _ = triton.stream_clone("From the prompt.", voice_prompt=prompt, **SHORT).collect()
    assert out_rate == RATE and len(audio) > 0
