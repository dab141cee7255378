"""Running the TypeScript client's Node tests from pytest: one way for every suite that does."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qwen3_tts_serving.settings import PROJECT_ROOT

TS_DIR = PROJECT_ROOT / "client" / "typescript"


@dataclass
class NodeRun:
    returncode: int
    stdout: str
    output: str  # exit status, stdout and stderr: what an assertion shows

    def count(self, name: str) -> int:
        """A ``node --test`` summary figure (``# pass 14``); -1 when the line is missing."""
        match = re.search(rf"^# {name} (\d+)$", self.stdout, re.MULTILINE)
        return int(match.group(1)) if match else -1


def npm() -> str:
    found = shutil.which("npm")
    assert found, "npm is not installed: the TypeScript client needs Node.js 20+ with npm"
    return found


def install_dependencies() -> None:
    """The stamped `npm ci` of `make typescript-check` (nothing to do while the lock file is unchanged)."""
    subprocess.run(["make", "--no-print-directory", "typescript-deps"], cwd=PROJECT_ROOT, check=True)


def run_node(command: list[str], env: dict[str, str], timeout_s: float, cwd: Path = TS_DIR) -> NodeRun:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    output = f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    return NodeRun(result.returncode, result.stdout, output)
