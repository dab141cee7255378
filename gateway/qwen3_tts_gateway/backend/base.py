"""The engine interface between the HTTP routes and the inference server.

Routes only see :class:`TTSEngine`; :mod:`.triton` implements it over Triton's gRPC streaming API. Errors
leave an engine as :class:`~qwen3_tts_gateway.errors.EngineError` subclasses, each carrying its HTTP status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from qwen3_tts_serving import contract

SynthesisModel = Literal["custom_voice", "voice_design", "voice_clone"]
SYNTHESIS_MODELS: tuple[SynthesisModel, ...] = contract.SYNTHESIS_MODELS  # type: ignore[assignment]
VOICE_PROMPT_MODEL = contract.VOICE_PROMPT
# Text-streaming sessions (the *_session models): premium timbres and saved/cloned voices.
SESSION_MODELS: dict[str, str] = {
    contract.CUSTOM_VOICE: contract.CUSTOM_VOICE_SESSION,
    contract.VOICE_CLONE: contract.VOICE_CLONE_SESSION,
}
ALL_MODELS: tuple[str, ...] = contract.MODELS


@dataclass(frozen=True)
class SamplingParams:
    """Optional sampling overrides; ``None`` leaves the model's default."""

    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class VoicePrompt:
    """A reusable clone prompt computed once by the ``voice_prompt`` model."""

    speaker_embedding: np.ndarray  # float32 [D]
    ref_codes: np.ndarray  # int64 [T, 16]; T == 0 in x-vector-only mode
    ref_text: str | None = None
    x_vector_only: bool = False


@dataclass(frozen=True)
class SynthesisRequest:
    """One request to a streaming synthesis model; only decoded arrays, never paths or URLs."""

    model: SynthesisModel
    text: str
    language: str = "auto"
    speaker: str | None = None
    instruct: str | None = None
    ref_audio: np.ndarray | None = None  # float32 mono
    ref_sample_rate: int | None = None
    ref_text: str | None = None
    x_vector_only: bool | None = None
    voice_prompt: VoicePrompt | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class AudioChunk:
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    sequence: int
    is_last: bool
    finish_reason: str = ""


@dataclass(frozen=True)
class SessionRequest:
    """Opens a text-streaming session. ``synthesis`` carries the voice, language and sampling; its text
    (possibly empty) is the first fragment. ``lookahead_tokens`` None keeps the model's default."""

    synthesis: SynthesisRequest
    lookahead_tokens: int | None = None

    @property
    def model(self) -> str:
        return SESSION_MODELS[self.synthesis.model]


@runtime_checkable
class EngineSession(Protocol):
    """One open session: text goes in with ``send_text``/``end``, audio comes out by iterating it.

    Iteration yields the chunks of the whole session (``sequence`` from 0) and stops after the chunk with
    ``is_last`` (its ``finish_reason``: stop, length, repetition, idle_timeout or cancelled); it raises
    ``EngineError`` subclasses. ``aclose()`` ends the session early, freeing its slot in the engine.
    """

    session_id: str

    async def send_text(self, text: str, *, flush: bool = False) -> None:
        """Append a fragment (any size, may be empty); ``flush`` commits a partial last word now."""
        ...

    async def end(self, text: str = "") -> None:
        """Append a last fragment and close the input (the model appends its end-of-text marker)."""
        ...

    def __aiter__(self) -> AsyncIterator[AudioChunk]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TTSEngine(Protocol):
    async def ready(self) -> bool:
        """True when the inference server answers and is ready."""
        ...

    async def model_ready(self, name: str) -> bool:
        """True when the named model is loaded and ready."""
        ...

    async def served_models(self) -> tuple[str, ...]:
        """The models of the contract the server's repository holds (a server may serve a subset:
        ``qwen3-tts-serve --models ...``); every model when the server cannot say."""
        ...

    def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        """Stream the chunks of one synthesis; closing the iterator cancels the upstream request.

        Raises ``EngineError`` subclasses (also from the first ``__anext__``).
        """
        ...

    async def open_session(self, request: SessionRequest) -> EngineSession:
        """Start a text-streaming session (its first request is sent before this returns)."""
        ...

    async def create_voice_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None, x_vector_only: bool
    ) -> VoicePrompt:
        """Encode a reference clip into a reusable voice prompt."""
        ...

    async def close(self) -> None: ...
