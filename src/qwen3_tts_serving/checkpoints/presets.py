"""Presets: which released model each flavour copies, and how the tiny preset shrinks it.

``full-*`` presets take the real configs unchanged (random weights, bfloat16 on disk). ``tiny`` takes the
1.7B configs and shrinks only widths and depths: every id, vocabulary size (talker 3072, text 151936,
16 codebooks of 2048), frame rate and up-sampling layout stays real, so the serving code sees the same
shapes and ids it will see in production.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from qwen3_tts_serving.checkpoints.reference import JsonDict, ReferenceConfigs

FLAVOURS = ("custom_voice", "base", "voice_design")
PRESETS = ("tiny", "full-1.7b", "full-0.6b")

# Which released model each preset/flavour copies. 0.6B has no VoiceDesign release.
REFERENCE_MODEL: dict[str, dict[str, str]] = {
    "tiny": {"custom_voice": "1.7B-CustomVoice", "base": "1.7B-Base", "voice_design": "1.7B-VoiceDesign"},
    "full-1.7b": {
        "custom_voice": "1.7B-CustomVoice",
        "base": "1.7B-Base",
        "voice_design": "1.7B-VoiceDesign",
    },
    "full-0.6b": {"custom_voice": "0.6B-CustomVoice", "base": "0.6B-Base"},
}

TINY_TALKER: JsonDict = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    # mrope_section must sum to head_dim / 2; same 3-way interleaved split as the real 24/20/20.
    "rope_scaling": {
        "interleaved": True,
        "mrope_section": [4, 2, 2],
        "rope_type": "default",
        "type": "default",
    },
    # Text embeddings are 151936 rows: the width dominates the file size, so keep it small.
    "text_hidden_size": 8,
}
TINY_CODE_PREDICTOR: JsonDict = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "layer_types": ["full_attention"],
}
# The real file lists only enc_dim and sample_rate (the rest are class defaults); the tiny one must list
# the shrunk channels. mel_dim stays 128 (extract_speaker_embedding always computes 128 mels).
TINY_SPEAKER_ENCODER: JsonDict = {
    "mel_dim": 128,
    "enc_channels": [32, 32, 32, 32, 96],
    "enc_kernel_sizes": [5, 3, 3, 3, 1],
    "enc_dilations": [1, 2, 3, 4, 1],
    "enc_attention_channels": 16,
    "enc_res2net_scale": 8,
    "enc_se_channels": 16,
}
TINY_CODEC_DECODER: JsonDict = {
    "latent_dim": 32,
    "codebook_dim": 16,
    "decoder_dim": 64,  # halved by each of the 4 up-sampling blocks: 64 -> 4 output channels
    "hidden_size": 32,
    "intermediate_size": 64,
    "head_dim": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "num_hidden_layers": 1,
    "vector_quantization_hidden_dimension": 16,
}
TINY_CODEC_ENCODER: JsonDict = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_filters": 4,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "codebook_dim": 8,
    "vector_quantization_hidden_dimension": 8,
    "upsample_groups": 32,  # must divide hidden_size (the real one is depthwise: 512 / 512)
}


@dataclass(frozen=True)
class CheckpointConfigs:
    """Every JSON file of one checkpoint folder, keyed by its path inside the folder."""

    preset: str
    flavour: str
    reference_model: str
    files: dict[str, JsonDict]

    @property
    def model_config(self) -> JsonDict:
        return self.files["config.json"]

    @property
    def speech_tokenizer_config(self) -> JsonDict:
        return self.files["speech_tokenizer/config.json"]

    @property
    def is_full_size(self) -> bool:
        return self.preset != "tiny"


def available_flavours(preset: str) -> tuple[str, ...]:
    _check_preset(preset)
    return tuple(f for f in FLAVOURS if f in REFERENCE_MODEL[preset])


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")


def _shrink_model_config(config: JsonDict) -> JsonDict:
    talker = config["talker_config"]
    talker.update(copy.deepcopy(TINY_TALKER))
    talker["code_predictor_config"].update(copy.deepcopy(TINY_CODE_PREDICTOR))
    if "speaker_encoder_config" in config:
        # The x-vector is spliced into the talker's input sequence: its width must be the talker's.
        config["speaker_encoder_config"].update(copy.deepcopy(TINY_SPEAKER_ENCODER))
        config["speaker_encoder_config"]["enc_dim"] = talker["hidden_size"]
    return config


def _shrink_speech_tokenizer_config(config: JsonDict) -> JsonDict:
    config["decoder_config"].update(copy.deepcopy(TINY_CODEC_DECODER))
    config["encoder_config"].update(copy.deepcopy(TINY_CODEC_ENCODER))
    return config


def checkpoint_configs(preset: str, flavour: str, reference: ReferenceConfigs) -> CheckpointConfigs:
    """All config files of one flavour of one preset, without building any weight."""
    _check_preset(preset)
    if flavour not in REFERENCE_MODEL[preset]:
        raise ValueError(
            f"preset {preset!r} has no {flavour!r} flavour (no such released model); "
            f"choose from {available_flavours(preset)}"
        )
    model = REFERENCE_MODEL[preset][flavour]
    files: dict[str, Any] = {rel: reference.get(model, rel) for rel in reference.files[model]}
    if preset == "tiny":
        files["config.json"] = _shrink_model_config(files["config.json"])
        files["speech_tokenizer/config.json"] = _shrink_speech_tokenizer_config(
            files["speech_tokenizer/config.json"]
        )
    return CheckpointConfigs(preset=preset, flavour=flavour, reference_model=model, files=files)
