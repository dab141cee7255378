"""Triton model `voice_clone`: a thin front; its checkpoint's engine model generates (qwen3_tts_serving)."""

from qwen3_tts_serving.triton_front import SpeechFront


class TritonPythonModel(SpeechFront):
    pass
