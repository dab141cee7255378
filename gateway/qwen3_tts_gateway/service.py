"""Synthesis between routes and the engine: voice resolution, deadlines, metrics, long text split into
pipelined segments (segments.py), and opening a stream only once its first chunk (or its error) has
arrived, so every error status is decided before any byte.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import numpy as np

from qwen3_tts_serving import contract

from .backend import (
    AudioChunk,
    EngineSession,
    SamplingParams,
    SessionRequest,
    SynthesisRequest,
    TTSEngine,
    VoicePrompt,
)
from .bodies import check_text_lengths
from .catalog import clone_voice_id
from .errors import (
    EngineFailureError,
    EngineUnavailableError,
    GatewayError,
    NotFoundError,
    UpstreamTimeoutError,
)
from .metrics import GatewayMetrics
from .refaudio import ReferenceAudio
from .schemas import SamplingFields, SpeechBody
from .segments import SEGMENT_MAX_CHARS, pipelined_chunks, segment_requests, split_segments
from .voices import VoiceRecord, VoiceStore

logger = logging.getLogger(__name__)


def sampling_of(body: SamplingFields) -> SamplingParams:
    return SamplingParams(**{name: getattr(body, name) for name in contract.SAMPLING_INPUTS})


@dataclass(frozen=True)
class SynthesizedAudio:
    audio: np.ndarray
    sample_rate: int
    finish_reason: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate if self.sample_rate else 0.0


async def _aclose(source: AsyncIterator[AudioChunk]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()


class AudioStream:
    """A synthesis whose first chunk has arrived. Iterate once; ``aclose()`` cancels the upstream request."""

    def __init__(
        self,
        first: AudioChunk,
        source: AsyncIterator[AudioChunk],
        *,
        route: str,
        started: float,
        deadline: float,
        metrics: GatewayMetrics,
    ) -> None:
        self.first = first
        self.sample_rate = first.sample_rate
        self.finish_reason = ""
        self.samples = 0
        self.chunks = 0
        self._source = source
        self._route = route
        self._started = started
        self._deadline = deadline
        self._metrics = metrics
        self._closed = False
        self._failed = False
        self._ended = False
        metrics.active_streams.inc()

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    @property
    def cancelled(self) -> bool:
        """Closed before its end by its consumer (a client that left, a cancel), not by a failure."""
        return self._closed and not self._ended and not self._failed

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioChunk]:
        try:
            chunk: AudioChunk | None = self.first
            while chunk is not None:
                yield self._account(chunk)
                chunk = await self._next()
            self._ended = True
            self._finished()
        except GatewayError as exc:
            self._failed = True
            self._metrics.errors.labels(self._route, exc.error_type).inc()
            # The one log line of a failure, whatever the response does with it next (an in-band error,
            # an error event, or a raw audio body left incomplete): the consumers do not log it again.
            logger.warning("%s: stream failed after %d chunks: %s", self._route, self.chunks, exc.message)
            raise
        finally:
            await self.aclose()

    async def _next(self) -> AudioChunk | None:
        remaining = self._deadline - time.monotonic()
        try:
            return await asyncio.wait_for(anext(self._source), max(remaining, 0.001))
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise UpstreamTimeoutError("synthesis did not finish in time") from None

    def _account(self, chunk: AudioChunk) -> AudioChunk:
        self.chunks += 1
        self.samples += len(chunk.audio)
        if chunk.is_last:
            self.finish_reason = chunk.finish_reason or "stop"
            self._metrics.finish_reasons.labels(self._route, self.finish_reason).inc()
        return chunk

    def _finished(self) -> None:
        elapsed = time.monotonic() - self._started
        self._metrics.audio_seconds.labels(self._route).inc(self.duration_s)
        if self.duration_s > 0:
            self._metrics.real_time_factor.labels(self._route).observe(elapsed / self.duration_s)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._metrics.active_streams.dec()
            if not self.finish_reason and not self._failed:
                self._metrics.finish_reasons.labels(self._route, "cancelled").inc()
            await _aclose(self._source)


class SynthesisService:
    """``segment_chars``: texts longer than this are split at sentences into pipelined segments."""

    def __init__(
        self,
        engine: TTSEngine,
        voices: VoiceStore,
        metrics: GatewayMetrics,
        *,
        timeout_s: float,
        max_text_length: int,
        segment_chars: int = SEGMENT_MAX_CHARS,
    ) -> None:
        self._max_text_length = max_text_length
        self._engine = engine
        self._voices = voices
        self._metrics = metrics
        self._timeout_s = timeout_s
        self.segment_chars = segment_chars

    async def _reusable_voice(self, request: SynthesisRequest) -> SynthesisRequest:
        """A one-off clone's reference encoded once into a prompt, reused by every segment."""
        if request.model != "voice_clone" or request.voice_prompt is not None or request.ref_audio is None:
            return request
        prompt = await self._engine.create_voice_prompt(
            request.ref_audio, request.ref_sample_rate or 0, request.ref_text, bool(request.x_vector_only)
        )
        return replace(request, voice_prompt=prompt, ref_audio=None, ref_sample_rate=None)

    async def _source(self, request: SynthesisRequest, segments: list[str]) -> AsyncIterator[AudioChunk]:
        if len(segments) == 1:
            return self._engine.stream(request)
        logger.info("%s: %d characters in %d segments", request.model, len(request.text), len(segments))
        request = await self._reusable_voice(request)
        return pipelined_chunks(self._engine.stream, segment_requests(request, segments))

    async def open_stream(self, request: SynthesisRequest, route: str) -> AudioStream:
        """Start a synthesis and wait for its first chunk; errors (and their statuses) surface here.

        Long text is split into segments (each gets ``timeout_s`` on the deadline of the whole).
        """
        started = time.monotonic()
        segments = split_segments(request.text, self.segment_chars)
        source = await self._source(request, segments)
        try:
            first = await asyncio.wait_for(anext(source), self._timeout_s)
        except StopAsyncIteration:
            raise EngineFailureError("the model returned no audio") from None
        except asyncio.TimeoutError:
            await _aclose(source)
            raise UpstreamTimeoutError("no audio before the request timeout") from None
        except BaseException:
            await _aclose(source)
            raise
        self._metrics.time_to_first_audio.labels(route).observe(time.monotonic() - started)
        return AudioStream(
            first,
            source,
            route=route,
            started=started,
            deadline=started + self._timeout_s * len(segments),
            metrics=self._metrics,
        )

    async def synthesize(self, request: SynthesisRequest, route: str) -> SynthesizedAudio:
        """The whole utterance as one array."""
        stream = await self.open_stream(request, route)
        parts = [chunk.audio async for chunk in stream]
        audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        return SynthesizedAudio(audio, stream.sample_rate, stream.finish_reason or "unknown")

    async def open_session(self, request: SessionRequest) -> EngineSession:
        """Start a text-streaming session; 503 before anything is sent when its model is not ready."""
        if not await self._engine.model_ready(request.model):
            raise EngineUnavailableError(f"the {request.model} model is not ready; retry later")
        return await self._engine.open_session(request)

    async def speech_request(self, owner: str, body: SpeechBody) -> SynthesisRequest:
        """The one way a speech body becomes an engine request, for every route and socket: text lengths
        checked (422 under the body's own field names), a built-in timbre to ``custom_voice``,
        ``qwen3-clone-<id>`` to ``voice_clone`` with its stored prompt, the body's sampling values."""
        speech = body.speech()
        check_text_lengths(self._max_text_length, **speech.limited)
        sampling = sampling_of(body)
        voice_id = clone_voice_id(speech.voice)
        if voice_id is None:
            return SynthesisRequest(
                "custom_voice",
                speech.text,
                speech.language,
                speaker=speech.voice,
                instruct=speech.instruct or None,
                sampling=sampling,
            )
        prompt = await self._voices.get_prompt(owner, voice_id)
        if prompt is None:
            raise NotFoundError(f"voice {speech.voice[:64]!r} not found", param="voice")
        return SynthesisRequest(
            "voice_clone", speech.text, speech.language, voice_prompt=prompt, sampling=sampling
        )

    async def create_voice(
        self,
        *,
        owner: str,
        reference: ReferenceAudio,
        ref_text: str | None,
        x_vector_only: bool,
        name: str | None,
    ) -> VoiceRecord:
        """Encode the reference once with ``voice_prompt`` and store the prompt."""
        prompt: VoicePrompt = await self._engine.create_voice_prompt(
            reference.samples, reference.sample_rate, ref_text or None, x_vector_only
        )
        return await self._voices.add(owner, prompt, name=name, duration_s=reference.duration_s)
