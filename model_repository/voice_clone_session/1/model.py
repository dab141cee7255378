"""Triton model: voice-agent sessions over the sequence batcher (logic in qwen3_tts_serving)."""

from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.triton_adapter import SessionSynthesisModel


class TritonPythonModel(SessionSynthesisModel):
    capability = Capability.VOICE_CLONE
