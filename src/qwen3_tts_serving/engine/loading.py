"""Loading a checkpoint from a local folder with the package's own ``Qwen3TTSModel.from_pretrained``."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .config import EngineConfig
from .requests import Capability, ModelSpec

logger = logging.getLogger(__name__)

_CHECKPOINT_TYPES = {
    Capability.CUSTOM_VOICE: "custom_voice",
    Capability.VOICE_DESIGN: "voice_design",
    Capability.VOICE_CLONE: "base",
}


def _offline() -> None:
    # Weights only ever come from a local folder: never let transformers or the hub client go online.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_device(config: EngineConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def resolve_dtype(config: EngineConfig, device: torch.device) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, config.dtype)


def resolve_attention(config: EngineConfig, device: torch.device) -> str:
    if config.attn_implementation != "auto":
        return config.attn_implementation
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(config: EngineConfig, capability: Capability) -> Any:
    """The package's model wrapper, on the configured device and dtype, checked to fit ``capability``."""
    _offline()
    from qwen_tts import Qwen3TTSModel

    device = resolve_device(config)
    if device.type == "cpu" and config.cpu_threads > 0:
        # Every model is its own process: on a few cores, one thread each beats oversubscription.
        torch.set_num_threads(config.cpu_threads)
    dtype = resolve_dtype(config, device)
    attention = resolve_attention(config, device)
    path = Path(config.checkpoint_dir)
    logger.info("loading %s from %s on %s (%s, %s)", capability.value, path, device, dtype, attention)
    tts = Qwen3TTSModel.from_pretrained(
        str(path), device_map=str(device), dtype=dtype, attn_implementation=attention, local_files_only=True
    )
    tts.model.eval()
    expected = _CHECKPOINT_TYPES[capability]
    if tts.model.tts_model_type != expected:
        raise ValueError(
            f"{path} is a {tts.model.tts_model_type} checkpoint; {capability.value} needs a {expected} one"
        )
    return tts


def model_spec(tts: Any, capability: Capability) -> ModelSpec:
    config = tts.model.config
    speakers = tuple(sorted(s.lower() for s in tts.model.get_supported_speakers()))
    languages = tuple(str(lang).lower() for lang in tts.model.get_supported_languages())
    embedding_dim = config.talker_config.hidden_size if capability is Capability.VOICE_CLONE else None
    return ModelSpec(
        capability=capability, speakers=speakers, languages=languages, speaker_embedding_dim=embedding_dim
    )
