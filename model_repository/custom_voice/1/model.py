"""Triton model `custom_voice`: decoupled streaming synthesis. All logic lives in qwen3_tts_serving."""

from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.triton_adapter import StreamingSynthesisModel


class TritonPythonModel(StreamingSynthesisModel):
    capability = Capability.CUSTOM_VOICE
