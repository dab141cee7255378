"""Engine configuration read from Triton parameters: every bad value is named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen3_tts_serving.engine.config import EngineConfig


def test_parameters_are_converted(tmp_path: Path):
    config = EngineConfig.from_parameters(
        {"checkpoint_dir": str(tmp_path), "chunk_frames": "6", "frames_per_char": "2.5", "device": "cpu"}
    )
    assert config.chunk_frames == 6 and config.frames_per_char == 2.5 and config.device == "cpu"


def test_every_bad_parameter_is_named(tmp_path: Path):
    with pytest.raises(ValueError, match="chunk_frames='four'.*max_new_tokens='-'"):
        EngineConfig.from_parameters(
            {"checkpoint_dir": str(tmp_path), "chunk_frames": "four", "max_new_tokens": "-"}
        )
    with pytest.raises(ValueError, match="checkpoint_dir is missing"):
        EngineConfig.from_parameters({})
    with pytest.raises(ValueError, match="is not a directory"):
        EngineConfig.from_parameters({"checkpoint_dir": str(tmp_path / "absent")})
    with pytest.raises(ValueError, match="device 'tpu'; valid: auto, cpu, cuda"):
        EngineConfig.from_parameters({"checkpoint_dir": str(tmp_path), "device": "tpu"})
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        EngineConfig.from_parameters({"checkpoint_dir": str(tmp_path), "chunk_frames": "0"})


def test_frame_budget_caps_by_text_length(tmp_path: Path):
    config = EngineConfig(checkpoint_dir=tmp_path, frames_per_char=2.0, max_new_tokens=100)
    assert config.frame_budget("abcde", 1000, "english") == 2 * 5 + 24
    assert config.frame_budget("x" * 500, 1000, "english") == 100
    assert config.frame_budget("abcde", 3, "english") == 3


def test_frame_budget_per_language(tmp_path: Path):
    config = EngineConfig(
        checkpoint_dir=tmp_path, frames_per_char=2.0, frames_per_char_by_language="chinese=6, korean=5"
    )
    assert config.frame_budget("你好世界", 1000, "chinese") == 6 * 4 + 24
    assert config.frame_budget("abcd", 1000, "english") == 2 * 4 + 24
    assert config.frame_budget("你好世界", 1000, "auto") == 6 * 4 + 24  # auto: the most generous rate
    with pytest.raises(ValueError, match="frames_per_char_by_language"):
        EngineConfig.from_parameters({"checkpoint_dir": str(tmp_path), "frames_per_char_by_language": "zh:6"})


def test_chunks_start_small_twice_then_double_up_to_the_cap(tmp_path: Path):
    sizes = lambda **kw: [EngineConfig(checkpoint_dir=tmp_path, **kw).chunk_size(i) for i in range(6)]  # noqa: E731
    assert sizes() == [1, 1, 2, 4, 4, 4]  # the defaults
    assert sizes(first_chunk_frames=2) == [2, 2, 4, 4, 4, 4]
    assert sizes(first_chunk_frames=1, chunk_frames=8) == [1, 1, 2, 4, 8, 8]
    assert sizes(first_chunk_frames=6, chunk_frames=4) == [4, 4, 4, 4, 4, 4]  # the cap wins


def test_frame_step_settings_are_checked_and_the_slot_length_is_the_last_key_bucket(tmp_path: Path):
    base = {"checkpoint_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="cuda_graphs 'always'; valid: auto, on, off"):
        EngineConfig.from_parameters({**base, "cuda_graphs": "always"})
    with pytest.raises(ValueError, match="attention_length_buckets '128,x'"):
        EngineConfig.from_parameters({**base, "attention_length_buckets": "128,x"})
    with pytest.raises(ValueError, match="prefill_tokens_per_step must be >= 1"):
        EngineConfig.from_parameters({**base, "prefill_tokens_per_step": "0"})
    with pytest.raises(ValueError, match="slot_max_length must be >= 2"):
        EngineConfig.from_parameters({**base, "slot_max_length": "1"})
    config = EngineConfig.from_parameters(
        {**base, "attention_length_buckets": "512, 64,4096", "slot_max_length": "1000"}
    )
    assert config.length_buckets == [64, 512, 1000]


def test_every_engine_setting_has_one_default_the_settings_one(tmp_path: Path):
    """EngineConfig's defaults are the Settings defaults (README table), and the parameters the launcher
    writes for the default settings read back as the default config."""
    from dataclasses import fields

    from qwen3_tts_serving.engine.config import engine_parameters
    from qwen3_tts_serving.settings import Settings

    settings = Settings()
    parameters = engine_parameters(settings, checkpoint_dir=tmp_path, device="auto")
    assert set(parameters) == {f.name for f in fields(EngineConfig)}
    assert EngineConfig.from_parameters(parameters) == EngineConfig(checkpoint_dir=tmp_path)
    assert EngineConfig.cpu_threads == settings.cpu_threads  # once drifted: 0 here, 1 in Settings
    assert EngineConfig.frames_per_char_by_language == "chinese=6.0,japanese=6.0,korean=5.0"
    assert EngineConfig.drain_timeout_s == settings.triton_drain_timeout_s
