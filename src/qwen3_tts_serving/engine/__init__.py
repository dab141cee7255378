"""The streaming engine shared by every Triton model: continuous batching of Qwen3-TTS generation.

Import submodules directly (``from qwen3_tts_serving.engine.requests import ...``): ``requests`` and
``config`` need no torch, the rest do.
"""
