"""Engine fixtures: the real qwen-tts model code on the tiny random checkpoints, no Triton."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from graph_rehearsal import REHEARSAL_SETTINGS, rehearsed_graphs, replays

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
    request: pytest.FixtureRequest, checkpoint_root: Path, load_tts: Callable[[Capability], Any]
) -> Iterator[Callable[..., StreamingEngine]]:
    """``make_engine(capability, **config_overrides)``: an engine stepped by the test itself. Eager, or
    with its graphs rehearsed on the CPU where a test is marked ``both_frame_paths`` (the "graphs" run then
    fails unless every engine it made replayed its frame-step graphs)."""
    rehearsed = getattr(request, "param", "eager") == "graphs"
    made: list[StreamingEngine] = []

    def make(capability: Capability, **overrides: Any) -> StreamingEngine:
        # The real-time admission guard is timing-dependent: off here unless a test turns it on.
        base = EngineConfig(
            checkpoint_dir=checkpoint_root / FLAVOUR_DIRS[capability],
            device="cpu",
            realtime_step_budget_s=0.0,
        )
        if not rehearsed:
            return StreamingEngine(load_tts(capability), capability, replace(base, **overrides))
        with rehearsed_graphs():
            config = replace(base, **{**REHEARSAL_SETTINGS, **overrides})
            engine = StreamingEngine(load_tts(capability), capability, config)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        assert replays(engine.frame_step._graphs), "the rehearsed graphs were never replayed"
