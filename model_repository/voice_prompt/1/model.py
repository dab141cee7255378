"""Triton model `voice_prompt`: reference clip -> reusable voice prompt (logic in qwen3_tts_serving)."""

from qwen3_tts_serving.triton_adapter import VoicePromptModel


class TritonPythonModel(VoicePromptModel):
    pass
