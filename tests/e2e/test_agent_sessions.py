"""Voice-agent sessions end to end: the Python client (and raw WebSockets) -> the gateway's /ws/session under
uvicorn -> one gRPC stream per session (its requests name it: session_id) -> the real session models.

No fakes. Run with ``QWEN3_TTS_CHECKPOINT_DIR=/tmp/ckpt-engine pytest tests/e2e/test_agent_sessions.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from qwen3_tts_client import AsyncQwen3TTSClient, Qwen3TTSClient, SpeechSession, UnprocessableEntityError
from websockets.sync.client import connect as ws_connect

from .conftest import IDLE_TIMEOUT_S, Gateway
from .cpu import cpu_seconds_during

pytestmark = pytest.mark.e2e

GREEDY = {"do_sample": False, "max_new_tokens": 80}
SENTENCE = "Agents speak while they think, one word after another."
ATOL = 1e-4


def words_of(text: str) -> list[str]:
    """The text as an LLM streams it: each word with its leading space."""
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


def characters_of(text: str, size: int = 3) -> list[str]:
    """Fragments that cut words in the middle (tokens rarely end where words do)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def feed(session: SpeechSession, fragments: Iterable[str], delay_s: float) -> threading.Thread:
    """Send ``fragments`` from a thread, ``delay_s`` apart, then end the input."""

    def run() -> None:
        for fragment in fragments:
            session.send_text(fragment)
            time.sleep(delay_s)
        session.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def speak(
    gateway: Gateway, fragments: Iterable[str], *, voice: str = "ryan", delay_s: float = 0.0
) -> np.ndarray:
    """The audio of one greedy session fed ``fragments``."""
    with Qwen3TTSClient(base_url=gateway.url, timeout=300) as client:
        with client.session(voice=voice, language="english", **GREEDY) as session:
            sender = feed(session, fragments, delay_s)
            audio, rate, reason = session.collect()
            sender.join()
    assert rate == 24_000 and reason in ("stop", "length") and len(audio) > 0
    return audio


def test_audio_starts_before_the_last_fragment_is_sent(agent_gateway: Gateway) -> None:
    fragments = words_of(SENTENCE + " " + SENTENCE)
    sent_last_at: list[float] = []
    with Qwen3TTSClient(base_url=agent_gateway.url, timeout=300) as client:
        with client.session(voice="vivian", language="english", **GREEDY) as session:

            def run() -> None:
                for fragment in fragments:
                    session.send_text(fragment)
                    time.sleep(0.3)  # an LLM producing a word now and then
                sent_last_at.append(time.monotonic())
                session.end()

            sender = threading.Thread(target=run, daemon=True)
            sender.start()
            first_audio_at = None
            for chunk in session:
                if first_audio_at is None and len(chunk.audio):
                    first_audio_at = time.monotonic()
            sender.join()
    assert session.finish_reason in ("stop", "length")
    assert first_audio_at is not None and first_audio_at < sent_last_at[0], (
        "no audio before the last fragment"
    )


def test_streamed_text_gives_the_same_audio_as_the_whole_text(agent_gateway: Gateway) -> None:
    whole = speak(agent_gateway, [SENTENCE])
    by_word = speak(agent_gateway, words_of(SENTENCE), delay_s=0.15)
    by_piece = speak(agent_gateway, characters_of(SENTENCE), delay_s=0.02)
    for streamed in (by_word, by_piece):
        assert len(streamed) == len(whole)
        np.testing.assert_allclose(streamed, whole, atol=ATOL)


def test_two_sessions_at_once_stay_separate(agent_gateway: Gateway) -> None:
    fragments = words_of(SENTENCE)
    alone = {voice: speak(agent_gateway, fragments, voice=voice) for voice in ("ryan", "serena")}
    with ThreadPoolExecutor(2) as pool:
        together = dict(
            zip(
                alone,
                pool.map(lambda voice: speak(agent_gateway, fragments, voice=voice, delay_s=0.1), alone),
                strict=True,
            )
        )
    for voice, audio in alone.items():
        assert len(together[voice]) == len(audio)
        np.testing.assert_allclose(together[voice], audio, atol=ATOL, err_msg=voice)
    shortest = min(len(audio) for audio in alone.values())
    assert not np.allclose(alone["ryan"][:shortest], alone["serena"][:shortest], atol=ATOL)


async def test_the_async_client(agent_gateway: Gateway) -> None:
    import asyncio

    async with AsyncQwen3TTSClient(base_url=agent_gateway.url, timeout=300) as client:
        async with client.session(voice="ryan", language="english", format="pcm", **GREEDY) as session:

            async def send() -> None:
                for fragment in words_of(SENTENCE):
                    await session.send_text(fragment)
                    await asyncio.sleep(0.05)
                await session.end()

            sender = asyncio.ensure_future(send())
            audio, _, reason = await session.collect()
            await sender
    assert reason in ("stop", "length")
    np.testing.assert_allclose(audio, speak(agent_gateway, [SENTENCE]), atol=ATOL)


def test_an_idle_session_is_ended_with_a_clear_event(idle_gateway: Gateway) -> None:
    url = idle_gateway.ws_url + "/ws/session"
    with ws_connect(url, open_timeout=30, max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "voice": "ryan", "language": "english", **GREEDY}))
        assert json.loads(ws.recv(timeout=30))["type"] == "started"
        ws.send(json.dumps({"type": "text", "text": "Hello there, I am about to"}))
        waited_from = time.monotonic()
        while isinstance(message := ws.recv(timeout=60), bytes):
            waited_from = time.monotonic()  # audio keeps a session alive; silence both ways does not
        done = json.loads(message)
        assert done["type"] == "done" and done["finish_reason"] == "idle_timeout"
        assert IDLE_TIMEOUT_S - 0.5 < time.monotonic() - waited_from < IDLE_TIMEOUT_S + 5
        error = json.loads(ws.recv(timeout=IDLE_TIMEOUT_S + 10))  # nothing more said: the socket goes
        assert (error["type"], error["status"], error["reason"]) == ("error", 408, "idle_timeout")
    metrics = httpx.get(idle_gateway.url + "/metrics").text
    assert 'qwen3_tts_gateway_finish_reasons_total{reason="idle_timeout",route="/ws/session"} 1.0' in metrics
    assert "qwen3_tts_gateway_active_sessions 0.0" in metrics
    assert speak(idle_gateway, [SENTENCE]).size  # the engine took the next session at once


def test_a_client_that_disconnects_frees_its_slot(agent_gateway: Gateway, triton_server: Any) -> None:
    """The engine stops generating for a session whose client left: Triton's CPU time falls to ~idle."""
    long_text = " ".join([SENTENCE] * 6)
    ws = ws_connect(agent_gateway.ws_url + "/ws/session", open_timeout=30, max_size=None)
    ws.send(json.dumps({"type": "start", "voice": "ryan", "language": "english", "do_sample": False}))
    assert json.loads(ws.recv(timeout=30))["type"] == "started"
    ws.send(json.dumps({"type": "end", "text": long_text}))  # a few hundred frames to generate
    assert isinstance(ws.recv(timeout=60), bytes)
    busy = cpu_seconds_during(triton_server.pid, 1.0)
    ws.close()  # no cancel message: the connection just goes
    time.sleep(1.0)
    idle = cpu_seconds_during(triton_server.pid, 2.0)
    assert busy > 0.3, f"the positive control failed: Triton used {busy:.2f} CPU-s while generating"
    assert idle < 0.25, f"Triton still used {idle:.2f} CPU-s in 2 s after the client left"
    metrics = httpx.get(agent_gateway.url + "/metrics").text
    assert "qwen3_tts_gateway_active_sessions 0.0" in metrics


def test_refusals_over_the_real_stack(agent_gateway: Gateway) -> None:
    with Qwen3TTSClient(base_url=agent_gateway.url, timeout=60) as client:
        with pytest.raises(UnprocessableEntityError, match="valid voices"):
            client.session(voice="nobody").open()
        with pytest.raises(UnprocessableEntityError, match="lookahead_tokens"):
            client.session(voice="ryan", lookahead_tokens=65).open()
        with client.session(voice="ryan", lookahead_tokens=2, **GREEDY) as session:
            session.send_text("x" * (agent_gateway.settings.max_text_length + 1))
            session.end("Fine.")
            audio, _, reason = session.collect()
        assert reason in ("stop", "length") and len(audio) > 0
        assert [error.status_code for error in session.refused] == [422]
