"""An in-process stand-in for the Triton engine.

ONLY for tests of the gateway's own routing, validation, encoding and error-handling logic: it implements
the ``TTSEngine`` protocol with synthetic sine chunks and scripted errors. Everything that concerns Triton
itself (gRPC, the models, cancellation inside the server) is tested against the real server in
tests/e2e/test_gateway.py and, for connection failures, against real sockets in ``test_triton_engine.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
from qwen3_tts_gateway.backend import ALL_MODELS, AudioChunk, SessionRequest, SynthesisRequest, VoicePrompt
from qwen3_tts_gateway.errors import EngineInvalidRequestError

SAMPLE_RATE = 24_000
SAMPLES_PER_CHAR = 240  # a fake session speaks 10 ms per character


def tone(start: int, count: int) -> np.ndarray:
    t = np.arange(start, start + count) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)


@dataclass
class FakeSession:
    """A session that answers each fragment with 10 ms of tone per character, ``end`` with the last
    chunk (``stop``), and ends by itself with ``idle_timeout`` after ``idle_timeout_s`` without text."""

    session_id: str
    request: SessionRequest
    idle_timeout_s: float | None = None
    error: Exception | None = None
    fragments: list[tuple[str, bool]] = field(default_factory=list)
    ended: bool = False
    finished: bool = False
    cancelled: bool = False
    _queue: asyncio.Queue[AudioChunk] = field(default_factory=asyncio.Queue)
    _sequence: int = 0
    _samples: int = 0

    def __post_init__(self) -> None:
        if self.request.synthesis.text:
            self._speak(self.request.synthesis.text)

    def _speak(self, text: str, *, last: bool = False, reason: str = "") -> None:
        count = SAMPLES_PER_CHAR * len(text)
        self._queue.put_nowait(
            AudioChunk(tone(self._samples, count), SAMPLE_RATE, self._sequence, last, reason)
        )
        self._sequence += 1
        self._samples += count

    async def send_text(self, text: str, *, flush: bool = False) -> None:
        if self.finished or self.ended:
            raise EngineInvalidRequestError("the session has ended")
        self.fragments.append((text, flush))
        if text:
            self._speak(text)

    async def end(self, text: str = "") -> None:
        if self.finished or self.ended:
            raise EngineInvalidRequestError("the session has ended")
        self.fragments.append((text, False))
        self.ended = True
        self._speak(text, last=True, reason="stop")

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioChunk]:
        try:
            while True:
                if self.error is not None:
                    raise self.error
                try:
                    chunk = await asyncio.wait_for(self._queue.get(), self.idle_timeout_s)
                except asyncio.TimeoutError:
                    chunk = AudioChunk(
                        np.zeros(0, np.float32), SAMPLE_RATE, self._sequence, True, "idle_timeout"
                    )
                yield chunk
                if chunk.is_last:
                    self.finished = True
                    return
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self.finished and not self.cancelled:
            self.cancelled = True


@dataclass
class FakeEngine:
    chunks: int = 3
    samples_per_chunk: int = 4800
    delay_s: float = 0.0
    error: Exception | None = None
    error_at_chunk: int = 0  # the chunk index at which ``error`` is raised
    error_at_request: int | None = None  # only this stream (0 = the engine's first) raises ``error``
    finish_reason: str = "stop"
    server_ready: bool = True
    unready_models: set[str] = field(default_factory=set)
    served: tuple[str, ...] = ALL_MODELS
    requests: list[SynthesisRequest] = field(default_factory=list)
    prompt_calls: list[tuple[np.ndarray, int, str | None, bool]] = field(default_factory=list)
    completed: int = 0
    cancelled: int = 0
    closed: bool = False
    started: list[tuple[str, float]] = field(default_factory=list)  # (text, time) of each stream
    finished_at: list[float] = field(default_factory=list)
    sessions: list[FakeSession] = field(default_factory=list)
    session_idle_timeout_s: float | None = None
    session_error: Exception | None = None

    async def ready(self) -> bool:
        return self.server_ready

    async def model_ready(self, name: str) -> bool:
        return self.server_ready and name not in self.unready_models

    async def served_models(self) -> tuple[str, ...]:
        return self.served

    def _chunk(self, index: int) -> AudioChunk:
        t = np.arange(index * self.samples_per_chunk, (index + 1) * self.samples_per_chunk) / SAMPLE_RATE
        audio = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        last = index == self.chunks - 1
        return AudioChunk(audio, SAMPLE_RATE, index, last, self.finish_reason if last else "")

    async def open_session(self, request: SessionRequest) -> FakeSession:
        session = FakeSession(
            f"{len(self.sessions) + 1:016x}", request, self.session_idle_timeout_s, self.session_error
        )
        self.sessions.append(session)
        return session

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        number = len(self.requests)
        self.requests.append(request)
        self.started.append((request.text, time.monotonic()))
        finished = False
        try:
            for index in range(self.chunks):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self._fails(index, number):
                    finished = True
                    raise self.error
                yield self._chunk(index)
            finished = True
            self.completed += 1
            self.finished_at.append(time.monotonic())
        finally:
            if not finished:
                self.cancelled += 1

    def _fails(self, index: int, number: int) -> bool:
        at_request = self.error_at_request is None or number == self.error_at_request
        return self.error is not None and index == self.error_at_chunk and at_request

    async def create_voice_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None, x_vector_only: bool
    ) -> VoicePrompt:
        self.prompt_calls.append((audio, sample_rate, ref_text, x_vector_only))
        frames = 0 if x_vector_only or not ref_text else 5
        codes = np.arange(frames * 16, dtype=np.int64).reshape(frames, 16)
        embedding = np.linspace(-1, 1, 32, dtype=np.float32)
        return VoicePrompt(embedding, codes, ref_text, x_vector_only)

    async def close(self) -> None:
        self.closed = True
