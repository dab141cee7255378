from .base import (
    ALL_MODELS,
    SESSION_MODELS,
    SYNTHESIS_MODELS,
    VOICE_PROMPT_MODEL,
    AudioChunk,
    EngineSession,
    SamplingParams,
    SessionRequest,
    SynthesisModel,
    SynthesisRequest,
    TTSEngine,
    VoicePrompt,
)

__all__ = [
    "ALL_MODELS",
    "SESSION_MODELS",
    "SYNTHESIS_MODELS",
    "VOICE_PROMPT_MODEL",
    "AudioChunk",
    "EngineSession",
    "SamplingParams",
    "SessionRequest",
    "SynthesisModel",
    "SynthesisRequest",
    "TTSEngine",
    "VoicePrompt",
]
