"""Triton model `voice_design`: decoupled streaming synthesis. All logic lives in qwen3_tts_serving."""

from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.triton_adapter import StreamingSynthesisModel


class TritonPythonModel(StreamingSynthesisModel):
    capability = Capability.VOICE_DESIGN
