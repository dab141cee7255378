"""Triton model `voice_prompt`: reference clip -> reusable voice prompt, extracted by a Base engine model
beside its running batch (qwen3_tts_serving)."""

from qwen3_tts_serving.triton_front import VoicePromptFront


class TritonPythonModel(VoicePromptFront):
    pass
