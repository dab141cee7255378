"""The TypeScript client (client/typescript) end to end: its own test file, run by Node, against the real
gateway under uvicorn in front of the session's real tritonserver (``triton_server``, tests/conftest.py).

The gateway requires an API key here, so every call (HTTP and the session WebSocket) proves it sends one.
The reference clip for cloning is a real WAV file written like the Python client's (test_python_client.py).
Node's output is shown when anything fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from node_runs import install_dependencies, npm, run_node

from .conftest import running_gateway
from .test_python_client import reference

pytestmark = pytest.mark.e2e

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


def test_typescript_client_against_the_real_gateway(ts_gateway: str, reference_wav: Path) -> None:
    npm_binary = npm()
    install_dependencies()
    env = {
        **os.environ,
        "QWEN3_TTS_E2E_BASE_URL": ts_gateway,
        "QWEN3_TTS_E2E_API_KEY": API_KEY,
        "QWEN3_TTS_E2E_REFERENCE": str(reference_wav),
    }
    run = run_node([npm_binary, "run", "--silent", "test:e2e"], env, NODE_TIMEOUT_S)
    assert run.returncode == 0, run.output
    assert run.count("fail") == 0, run.output
    assert run.count("skipped") == 0, run.output
    assert run.count("pass") == EXPECTED_TESTS, run.output
