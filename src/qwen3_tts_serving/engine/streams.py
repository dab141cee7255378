"""Per-stream state kept by the engine, and the sink through which a stream's audio leaves it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from .requests import FinishReason, SamplingParams, SynthesisRequest


@dataclass
class AudioChunk:
    sequence: int
    audio: np.ndarray  # float32 mono samples
    sample_rate: int
    is_last: bool
    finish_reason: str = ""  # set on the last chunk only


class StreamSink(Protocol):
    """Where a stream's chunks go (a Triton response sender in production)."""

    def send(self, chunk: AudioChunk) -> None: ...

    def fail(self, error: Exception) -> None: ...

    def is_cancelled(self) -> bool: ...


class CollectingSink:
    """Keeps every chunk in memory; used for one-shot calls and by tests."""

    def __init__(self) -> None:
        self.chunks: list[AudioChunk] = []
        self.error: Exception | None = None
        self.cancelled = False
        self.done = threading.Event()
        self.chunk_times: list[float] = []

    def send(self, chunk: AudioChunk) -> None:
        self.chunks.append(chunk)
        self.chunk_times.append(time.monotonic())
        if chunk.is_last:
            self.done.set()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancelled

    def audio(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([c.audio for c in self.chunks])

    @property
    def finish_reason(self) -> str:
        return self.chunks[-1].finish_reason if self.chunks and self.chunks[-1].is_last else ""


class TextTrack:
    """The text that trails behind the prompt, one projected text embedding per talker step.

    A closed track ends with the end-of-text embedding and then yields nothing (the engine feeds
    tts_pad). An open track (voice agents) can still grow; when it runs dry the stream pauses.
    """

    def __init__(self, embeddings: torch.Tensor, *, closed: bool) -> None:
        self._rows: list[torch.Tensor] = list(embeddings.unbind(0))
        self._cursor = 0
        self.closed = closed

    def next_embedding(self) -> torch.Tensor | None:
        if self._cursor >= len(self._rows):
            return None
        row = self._rows[self._cursor]
        self._cursor += 1
        return row

    def starved(self, lookahead: int = 0) -> bool:
        """Open and (nearly) used up: stepping now would speak padding instead of text still to come, or
        would run closer to the end of the known text than the look-ahead allows."""
        return not self.closed and self.pending <= lookahead

    @property
    def pending(self) -> int:
        return len(self._rows) - self._cursor

    def append(self, embeddings: torch.Tensor) -> None:
        self._rows.extend(embeddings.unbind(0))

    def close(self, end_of_text: torch.Tensor) -> None:
        if not self.closed:
            self._rows.append(end_of_text.reshape(-1))
            self.closed = True


@dataclass(eq=False)
class Stream:
    request: SynthesisRequest
    sink: StreamSink
    sampling: SamplingParams
    seed: int
    max_frames: int
    text_track: TextTrack | None = None
    context_codes: torch.Tensor | None = None  # [R, 16] reference codes: decoder context for ICL clones
    decoder_state: Any = None  # the streaming decoder's memory of this stream's past (None: not started)
    frames: list[torch.Tensor] = field(default_factory=list)  # each [16]
    cb0_history: list[int] = field(default_factory=list)
    prompt_embeds: torch.Tensor | None = None  # [N, D] the talker prompt, between admission and prefill
    slot: int | None = None  # its slot of the talker's slot cache while it holds one
    prompt_length: int = 0  # talker tokens of its prompt (prefilled)
    cache_length: int = 0  # talker tokens in its slot (prompt + frames launched): sizes the attention
    emitted_frames: int = 0
    chunks_sent: int = 0
    finish_reason: FinishReason | None = None
    session_key: int | None = None  # voice-agent sessions: the client's session_id
    lookahead: int | None = None  # text tokens kept ahead of the talker (sessions); None: the default
    submitted_at: float = field(default_factory=time.monotonic)
    queued_at: float | None = None  # when it last entered the engine's admission queue
    # A clone whose reference clip is being encoded off the engine thread waits in the queue meanwhile.
    encoding_voice: bool = False
    voice_error: Exception | None = None  # its encoding failed: it ends where it waits
    first_audio_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def frame_count(self) -> int:
        return len(self.frames)
