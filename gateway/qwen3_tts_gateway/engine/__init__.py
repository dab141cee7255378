from .base import (
    ALL_MODELS,
    SYNTHESIS_MODELS,
    VOICE_PROMPT_MODEL,
    AudioChunk,
    SamplingParams,
    SynthesisModel,
    SynthesisRequest,
    TTSEngine,
    VoicePrompt,
)

__all__ = [
    "ALL_MODELS",
    "SYNTHESIS_MODELS",
    "VOICE_PROMPT_MODEL",
    "AudioChunk",
    "SamplingParams",
    "SynthesisModel",
    "SynthesisRequest",
    "TTSEngine",
    "VoicePrompt",
]
