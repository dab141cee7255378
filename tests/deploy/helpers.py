"""Paths and a subprocess helper shared by the deploy tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY_VENV = Path(os.environ.get("QWEN3_TTS_DEPLOY_VENV", REPO / ".venv-deploy"))


def run(
    cmd: list[str], cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, never raise on a non-zero exit (the tests assert on it)."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
