"""docker/render_repository.py with the project's real templates and builder (what the GPU image runs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .helpers import REPO, run

RENDER = REPO / "docker" / "render_repository.py"


def render(tmp_path: Path, *args: str, **env: str):
    base = {**os.environ, "QWEN3_TTS_CACHE_DIR": str(tmp_path / "cache"), "QWEN3_TTS_DEVICE": "cpu"}
    base.pop("QWEN3_TTS_CHECKPOINT_DIR", None)
    return run([sys.executable, str(RENDER), str(tmp_path / "repo"), *args], env={**base, **env}, timeout=60)


def test_fills_every_template(tmp_path: Path) -> None:
    for _ in range(2):  # a second fill replaces the first, as at every container start
        proc = render(tmp_path)
        assert proc.returncode == 0, proc.stderr
    models = (REPO / "model_repository").glob("*/config.pbtxt.template")
    fronts = [p.parent.name for p in models if (p.parent / "1" / "model.py").is_file()]
    fronts.remove("engine")  # filled once per checkpoint per GPU instead
    engines = [f"{checkpoint}_engine_0" for checkpoint in ("custom_voice", "base", "voice_design")]
    configs = sorted(p.parent.name for p in (tmp_path / "repo").glob("*/config.pbtxt"))
    assert fronts and configs == sorted([*fronts, *engines])
    for config in (tmp_path / "repo").glob("*/config.pbtxt"):
        assert "${" not in config.read_text(), config


def _weights(tmp_path: Path, tiny: Path) -> Path:
    """A checkpoint folder as synced at start: the tiny checkpoints, one link per flavour."""
    weights = tmp_path / "weights"
    weights.mkdir()
    for flavour in ("custom_voice", "base", "voice_design"):
        (weights / flavour).symlink_to(tiny / flavour, target_is_directory=True)
    return weights


def test_checkpoint_paths_follow_the_runtime_setting(tmp_path: Path, tiny_checkpoints: Path) -> None:
    weights = _weights(tmp_path, tiny_checkpoints)
    proc = render(tmp_path, "--check-checkpoints", QWEN3_TTS_CHECKPOINT_DIR=str(weights))
    assert proc.returncode == 0, proc.stderr
    engine = (tmp_path / "repo" / "custom_voice_engine_0" / "config.pbtxt").read_text()
    assert str(weights / "custom_voice") in engine


def test_missing_checkpoints_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = render(tmp_path, "--check-checkpoints", QWEN3_TTS_CHECKPOINT_DIR=str(tmp_path / "empty"))
    assert proc.returncode == 1
    assert "needs checkpoints" in proc.stderr
    assert not (tmp_path / "repo").exists()


def test_a_broken_checkpoint_or_a_bad_setting_stops_the_start_with_one_line(
    tmp_path: Path, tiny_checkpoints: Path
) -> None:
    weights = _weights(tmp_path, tiny_checkpoints)
    (weights / "voice_design").unlink()
    (weights / "voice_design").symlink_to(tiny_checkpoints / "base", target_is_directory=True)
    proc = render(tmp_path, "--check-checkpoints", QWEN3_TTS_CHECKPOINT_DIR=str(weights))
    assert proc.returncode == 1 and not (tmp_path / "repo").exists()
    assert proc.stderr.strip() == (
        f"render_repository: {weights / 'voice_design'} holds a base checkpoint "
        "(config.json tts_model_type); voice_design/ needs a voice_design one"
    )
    (weights / "voice_design").unlink()
    (weights / "voice_design").symlink_to(tiny_checkpoints / "voice_design", target_is_directory=True)
    for name, value, expected in [
        ("QWEN3_TTS_MAX_ACTIVE_STREAMS", "0", "max_active_streams must be >= 1"),
        ("QWEN3_TTS_DEVICE", "tpu", "QWEN3_TTS_DEVICE='tpu': Input should be 'auto', 'cpu' or 'cuda'"),
    ]:
        env = {"QWEN3_TTS_CHECKPOINT_DIR": str(weights), name: value}
        proc = render(tmp_path, "--check-checkpoints", **env)
        assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_exit_timeout_it_prints_covers_the_models_drain(tmp_path: Path) -> None:
    proc = render(tmp_path, QWEN3_TTS_TRITON_DRAIN_TIMEOUT_S="140")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["--exit-timeout-secs=150"]  # 140 s of drain + 10 s to unload
    drain = (tmp_path / "repo" / "custom_voice" / "config.pbtxt").read_text()
    assert '"140.0"' in drain  # the front's drain timeout
