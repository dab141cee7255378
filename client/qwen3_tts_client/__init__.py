"""Python client of the Qwen3-TTS gateway (sync and async), a direct Triton client, a provider facade
with a circuit breaker, and the ``qwen3-tts`` command line."""

from ._version import __version__
from .async_client import AsyncQwen3TTSClient
from .breaker import CircuitBreaker, CircuitState
from .client import Qwen3TTSClient
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadGatewayError,
    BadRequestError,
    CircuitOpenError,
    GatewayTimeoutError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    Qwen3TTSError,
    RateLimitError,
    RequestInfo,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
)
from .retry import RetryPolicy
from .routing import UnknownVoiceError, VoiceRoute, route_voice
from .session import AsyncSpeechSession, SpeechSession
from .streams import AsyncChunkStream, ChunkStream
from .text import chunk_text, split_sentences
from .types import AudioChunk, HealthStatus, Language, SamplingOptions, Speaker, SpeechResult, Voice

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChunkStream",
    "AsyncQwen3TTSClient",
    "AsyncSpeechSession",
    "AudioChunk",
    "AuthenticationError",
    "BadGatewayError",
    "BadRequestError",
    "ChunkStream",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "GatewayTimeoutError",
    "HealthStatus",
    "InternalServerError",
    "Language",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Qwen3TTSClient",
    "Qwen3TTSError",
    "RateLimitError",
    "RequestInfo",
    "RequestTimeoutError",
    "RetryPolicy",
    "SamplingOptions",
    "ServiceUnavailableError",
    "Speaker",
    "SpeechResult",
    "SpeechSession",
    "UnknownVoiceError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "Voice",
    "VoiceRoute",
    "__version__",
    "chunk_text",
    "route_voice",
    "split_sentences",
]
