"""Triton engine model `<checkpoint>_engine_<n>`: one checkpoint's weights, key/value slots and running batch
on one device; the client-facing models forward to it. All logic lives in qwen3_tts_serving."""

from qwen3_tts_serving.triton_adapter import EngineModel


class TritonPythonModel(EngineModel):
    pass
