"""The TypeScript client (client/typescript) end to end: its own test file, run by Node, against the real
gateway under uvicorn in front of the session's real tritonserver (``triton_server``, tests/conftest.py).

The gateway requires an API key here, so every call (HTTP and the session WebSocket) proves it sends one.
The reference clip for cloning is a real WAV file written like the Python client's (test_python_client.py).
Node's output is shown when anything fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from qwen3_tts_serving.settings import PROJECT_ROOT

from .conftest import running_gateway
from .test_python_client import reference

pytestmark = pytest.mark.e2e

TS_DIR = PROJECT_ROOT / "client" / "typescript"
API_KEY = "ts-e2e-key"
NODE_TIMEOUT_S = 1200
# The tests in test/e2e/gateway.e2e.test.ts; fewer passing means some did not run.
EXPECTED_TESTS = 14


@pytest.fixture(scope="module")
def ts_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(triton_server, tmp_path_factory.mktemp("ts-gateway"), api_keys=[API_KEY]) as gateway:
        yield gateway.url


@pytest.fixture(scope="module")
def reference_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate = reference()
    path = tmp_path_factory.mktemp("ts-reference") / "reference.wav"
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def _node_output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def _count(output: str, name: str) -> int:
    match = re.search(rf"^# {name} (\d+)$", output, re.MULTILINE)
    return int(match.group(1)) if match else -1


def test_typescript_client_against_the_real_gateway(ts_gateway: str, reference_wav: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is not installed: the TypeScript client needs Node.js 20+ with npm"
    # The same stamped `npm ci` as `make typescript-check` (nothing to do when the lock file is unchanged).
    subprocess.run(["make", "--no-print-directory", "typescript-deps"], cwd=PROJECT_ROOT, check=True)
    env = {
        **os.environ,
        "QWEN3_TTS_E2E_BASE_URL": ts_gateway,
        "QWEN3_TTS_E2E_API_KEY": API_KEY,
        "QWEN3_TTS_E2E_REFERENCE": str(reference_wav),
    }
    result = subprocess.run(
        [npm, "run", "--silent", "test:e2e"],
        cwd=TS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    output = _node_output(result)
    assert result.returncode == 0, output
    assert _count(result.stdout, "fail") == 0, output
    assert _count(result.stdout, "skipped") == 0, output
    assert _count(result.stdout, "pass") == EXPECTED_TESTS, output
