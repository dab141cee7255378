"""An in-process stand-in for the Triton engine.

ONLY for tests of the gateway's own routing, validation, encoding and error-handling logic: it implements
the ``TTSEngine`` protocol with synthetic sine chunks and scripted errors. Everything that concerns Triton
itself (gRPC, the models, cancellation inside the server) is tested against the real server in
``test_e2e_gateway.py`` and, for connection failures, against real sockets in ``test_triton_engine.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
from qwen3_tts_gateway.engine import AudioChunk, SynthesisRequest, VoicePrompt

SAMPLE_RATE = 24_000


@dataclass
class FakeEngine:
    chunks: int = 3
    samples_per_chunk: int = 4800
    delay_s: float = 0.0
    error: Exception | None = None
    error_at_chunk: int = 0  # the chunk index at which ``error`` is raised
    server_ready: bool = True
    unready_models: set[str] = field(default_factory=set)
    requests: list[SynthesisRequest] = field(default_factory=list)
    prompt_calls: list[tuple[np.ndarray, int, str | None, bool]] = field(default_factory=list)
    completed: int = 0
    cancelled: int = 0
    closed: bool = False

    async def ready(self) -> bool:
        return self.server_ready

    async def model_ready(self, name: str) -> bool:
        return self.server_ready and name not in self.unready_models

    def _chunk(self, index: int) -> AudioChunk:
        t = np.arange(index * self.samples_per_chunk, (index + 1) * self.samples_per_chunk) / SAMPLE_RATE
        audio = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        last = index == self.chunks - 1
        return AudioChunk(audio, SAMPLE_RATE, index, last, "stop" if last else "")

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        self.requests.append(request)
        finished = False
        try:
            for index in range(self.chunks):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.error is not None and index == self.error_at_chunk:
                    finished = True
                    raise self.error
                yield self._chunk(index)
            finished = True
            self.completed += 1
        finally:
            if not finished:
                self.cancelled += 1

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
