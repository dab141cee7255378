"""Triton model `voice_clone_session`: voice-agent sessions (named by session_id), forwarded to
its checkpoint's engine model, where they step in one batch with plain requests (qwen3_tts_serving)."""

from qwen3_tts_serving.triton_front import SessionFront


class TritonPythonModel(SessionFront):
    pass
