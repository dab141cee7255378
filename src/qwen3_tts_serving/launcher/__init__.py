"""Start the serving stack locally: model repository from templates, embedded tritonserver, gateway."""

from qwen3_tts_serving.launcher.process import StartupError
from qwen3_tts_serving.launcher.repository import build_model_repository, ensure_checkpoint_dir
from qwen3_tts_serving.launcher.triton import TritonServer, perf_analyzer_binary, perf_analyzer_env

__all__ = [
    "StartupError",
    "TritonServer",
    "build_model_repository",
    "ensure_checkpoint_dir",
    "perf_analyzer_binary",
    "perf_analyzer_env",
]
