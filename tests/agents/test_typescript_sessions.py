"""The TypeScript client's sessions (client/typescript/test/gateway) against the real gateway app under
uvicorn, with the fake engine (tests/gateway/fakes.py) standing in for Triton: Node runs that file against
the gateway this test serves. The same client against the real models is tests/e2e/test_typescript_client.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread

from gateway.conftest import make_settings, wait_until
from gateway.fakes import FakeEngine
from qwen3_tts_serving.settings import PROJECT_ROOT

TS_DIR = PROJECT_ROOT / "client" / "typescript"
TEST_FILE = "build-test/test/gateway/sessions.gateway.test.js"
API_KEY = "ts-key"
NODE_TIMEOUT_S = 300
EXPECTED_TESTS = 2  # in test/gateway/sessions.gateway.test.ts; fewer passing means some did not run
LATE_CANCEL = "/ws/session: ignored a cancel that came after the last request ended"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def url(engine: FakeEngine, tmp_path: Path) -> Iterator[str]:
    app = create_app(settings=make_settings(tmp_path, api_keys=[API_KEY]), engine=engine)
    with serve_in_thread(app) as base_url:
        yield base_url


def _node_output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def test_typescript_sessions_against_the_gateway(
    url: str, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is not installed: the TypeScript client needs Node.js 20+ with npm"
    caplog.set_level(logging.DEBUG, logger="qwen3_tts_gateway.websocket")
    subprocess.run(["make", "--no-print-directory", "typescript-deps"], cwd=PROJECT_ROOT, check=True)
    subprocess.run([npm, "run", "--silent", "build:test"], cwd=TS_DIR, check=True, timeout=NODE_TIMEOUT_S)
    env = {**os.environ, "QWEN3_TTS_GATEWAY_URL": url, "QWEN3_TTS_GATEWAY_API_KEY": API_KEY}
    result = subprocess.run(
        ["node", "--test", TEST_FILE],
        cwd=TS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    output = _node_output(result)
    assert result.returncode == 0, output
    assert f"# pass {EXPECTED_TESTS}\n" in result.stdout and "# skipped 0\n" in result.stdout, output
    # Only the cancel pressed twice reached the gateway late (and was ignored): once the client has read
    # "done" or closed, its cancel() sends nothing.
    assert wait_until(lambda: caplog.messages.count(LATE_CANCEL) == 1), caplog.messages
    assert len(engine.sessions) == 2 and engine.sessions[1].cancelled and not engine.sessions[0].cancelled
