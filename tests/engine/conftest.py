"""Engine fixtures: the real qwen-tts model code on the tiny random checkpoints, no Triton."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.engine import StreamingEngine
from qwen3_tts_serving.engine.loading import load_model
from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.launcher import ensure_checkpoint_dir
from qwen3_tts_serving.settings import Settings

FLAVOUR_DIRS = {
    Capability.CUSTOM_VOICE: "custom_voice",
    Capability.VOICE_DESIGN: "voice_design",
    Capability.VOICE_CLONE: "base",
}


@pytest.fixture(scope="session")
def checkpoint_root() -> Path:
    return ensure_checkpoint_dir(Settings())


@pytest.fixture(scope="session")
def load_tts(checkpoint_root: Path) -> Callable[[Capability], Any]:
    loaded: dict[Capability, Any] = {}

    def load(capability: Capability) -> Any:
        if capability not in loaded:
            config = EngineConfig(
                checkpoint_dir=checkpoint_root / FLAVOUR_DIRS[capability], device="cpu", cpu_threads=1
            )
            loaded[capability] = load_model(config, capability)
        return loaded[capability]

    return load


@pytest.fixture
def make_engine(
    checkpoint_root: Path, load_tts: Callable[[Capability], Any]
) -> Callable[..., StreamingEngine]:
    """``make_engine(capability, **config_overrides)``: an engine stepped by the test itself."""

    def make(capability: Capability, **overrides: Any) -> StreamingEngine:
        # The real-time admission guard is timing-dependent: off here unless a test turns it on.
        base = EngineConfig(
            checkpoint_dir=checkpoint_root / FLAVOUR_DIRS[capability],
            device="cpu",
            realtime_step_budget_s=0.0,
        )
        return StreamingEngine(load_tts(capability), capability, replace(base, **overrides))

    return make
