"""What the launcher tests share: the unit tests (tests/unit/test_launcher.py) and the ones that start a real
tritonserver (tests/e2e/test_launcher_server.py).
Both import it as ``unit.launcher_helpers`` (tests/ is on the path, through tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

from qwen3_tts_serving.settings import Settings


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings with every Triton port picked free and the cache under ``tmp_path``."""
    values: dict[str, object] = {
        "cache_dir": tmp_path / "cache",
        "triton_http_port": 0,
        "triton_grpc_port": 0,
        "triton_metrics_port": 0,
        "triton_startup_timeout_s": 60.0,
    }
    return Settings(**{**values, **overrides})


def _group_gone(pgid: int) -> bool:
    """Whether no process of the group ``pgid`` is left (a launched child and everything it started)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
