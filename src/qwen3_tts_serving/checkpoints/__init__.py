"""Seeded random-weight Qwen3-TTS checkpoints that the real ``qwen_tts`` loading code accepts.

- ``tiny``: the 1.7B id layout and vocabularies with shrunk widths/depths (~25 MB per flavour, built in
  about a second on a CPU) for tests and local runs;
- ``full-1.7b`` / ``full-0.6b``: the released configs unchanged, random bfloat16 weights, for GPU
  benchmarks (0.6B has no voice_design flavour, as in the releases).

Random weights are wired to stop: codebook-0 EOS wins once the frames generated reach
1.25 x the text tokens (see ``weights.py``), for greedy and sampled decoding alike.

Usage: ``ensure_checkpoints(out_dir)`` or ``qwen3-tts-checkpoints --out DIR``.
"""

from qwen3_tts_serving.checkpoints.builder import (
    GENERATOR_VERSION,
    ensure_checkpoints,
    is_complete,
    preset_configs,
    write_configs_only,
)
from qwen3_tts_serving.checkpoints.presets import FLAVOURS, PRESETS, CheckpointConfigs, available_flavours
from qwen3_tts_serving.checkpoints.reference import ENV_VAR, ReferenceConfigs, load_reference_configs
from qwen3_tts_serving.checkpoints.weights import EosClock

__all__ = [
    "ENV_VAR",
    "FLAVOURS",
    "GENERATOR_VERSION",
    "PRESETS",
    "CheckpointConfigs",
    "EosClock",
    "ReferenceConfigs",
    "available_flavours",
    "ensure_checkpoints",
    "is_complete",
    "load_reference_configs",
    "preset_configs",
    "write_configs_only",
]
