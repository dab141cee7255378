"""What the model-repository tests share: the unit tests of the build (tests/unit/test_repository.py) and
tritonserver loading every filled template (tests/e2e/test_repository_loads.py). Their ``checkpoints``
fixture (an empty folder per flavour) is in tests/conftest.py.
Both import it as ``unit.repository_helpers`` (tests/ is on the path, through tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from qwen3_tts_serving.launcher.repository import MODEL_REPOSITORY, TEMPLATE_NAME
from qwen3_tts_serving.settings import Settings

# Every template of the project (the generic checks cover them all), and the fronts among them.
TEMPLATES = sorted(p.parent.name for p in MODEL_REPOSITORY.glob(f"*/{TEMPLATE_NAME}"))
ALL_MODELS = [model for model in TEMPLATES if model != "engine"]  # the fronts
# The parameters every engine's config.pbtxt must carry (the generated engine_parameters block).
ENGINE_PARAMETERS = {
    "checkpoint_dir", "device", "dtype", "attn_implementation", "first_chunk_frames", "chunk_frames",
    "decoder_left_context_frames", "decoder_mode", "primed_decoder_cache_size", "code_predictor",
    "cuda_graph_batch_sizes", "max_active_streams", "max_queued_streams", "max_queue_wait_s",
    "realtime_step_budget_s", "max_new_tokens", "frames_per_char", "repetition_window", "max_text_length",
    "min_ref_audio_seconds", "max_ref_audio_seconds", "cuda_graphs", "slot_max_length",
    "attention_length_buckets", "prefill_tokens_per_step", "voice_prompt_batch", "voice_prompt_step_share",
    "voice_prompt_cache_size",
}  # fmt: skip


def _settings(tmp_path: Path, checkpoints: Path, **overrides: object) -> Settings:
    """Settings that build from ``checkpoints``, the cache under ``tmp_path``."""
    return Settings(cache_dir=tmp_path / "cache", checkpoint_dir=checkpoints, **overrides)


def _parse(config_path: Path) -> model_config_pb2.ModelConfig:
    """A built config.pbtxt, parsed as Triton reads it."""
    return text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
