"""The TypeScript client's sessions (client/typescript/test/gateway) against the real gateway app under
uvicorn, with the fake engine (tests/gateway/fakes.py) standing in for Triton: Node runs that file against
the gateway this test serves. The same client against the real models is tests/e2e/test_typescript_client.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_runs import install_dependencies, npm, run_node
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread

from gateway.conftest import make_settings, wait_until
from gateway.fakes import FakeEngine

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


def test_typescript_sessions_against_the_gateway(
    url: str, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    npm_binary = npm()
    caplog.set_level(logging.DEBUG, logger="qwen3_tts_gateway.websocket")
    install_dependencies()
    env = {**os.environ, "QWEN3_TTS_GATEWAY_URL": url, "QWEN3_TTS_GATEWAY_API_KEY": API_KEY}
    build = run_node([npm_binary, "run", "--silent", "build:test"], env, NODE_TIMEOUT_S)
    assert build.returncode == 0, build.output
    run = run_node(["node", "--test", TEST_FILE], env, NODE_TIMEOUT_S)
    assert run.returncode == 0, run.output
    assert run.count("pass") == EXPECTED_TESTS and run.count("skipped") == 0, run.output
    # Only the cancel pressed twice reached the gateway late (and was ignored): once the client has read
    # "done" or closed, its cancel() sends nothing.
    assert wait_until(lambda: caplog.messages.count(LATE_CANCEL) == 1), caplog.messages
    assert len(engine.sessions) == 2 and engine.sessions[1].cancelled and not engine.sessions[0].cancelled
