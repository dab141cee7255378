"""A bounded schema fuzz (schemathesis) of the real gateway in front of the real tritonserver, API keys on:
whatever the OpenAPI schema describes, valid or not (generation mode "all": positive and negative data),
never gets a 5xx. Run with ``pytest tests/e2e/test_schema_fuzz.py``.

Bounded so it takes a couple of minutes on 2 cores: ``EXAMPLES_PER_OPERATION`` examples per operation, no
coverage/stateful phases (they multiply the requests), and a gateway whose ``max_text_length`` is small, so
that every synthesis the schema allows is short (the server caps its frames at a few per character).

Not fuzzed, because they are not in the OpenAPI schema: the WebSocket routes (their start messages share
the body models checked here; test_session_protocol.py and test_validation.py cover their errors), the
playground's static files and /metrics (no input).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.embedded import serve_in_thread
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from gateway.conftest import clip, make_settings

pytestmark = pytest.mark.e2e

API_KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Every text field of the fuzzed gateway (text, input, instruct, ref_text...) is at most this long.
FUZZ_MAX_TEXT_LENGTH = 24
EXAMPLES_PER_OPERATION = 40  # 8 operations take input: about 330 requests in all
# A request that hangs is a failure too: the gateway answers 504 after REQUEST_TIMEOUT_S (a 5xx), and
# Hypothesis gives up on an example after EXAMPLE_DEADLINE_MS. Both are far above a short synthesis on a
# loaded 2-core machine (well under a second), so only a real hang trips them.
REQUEST_TIMEOUT_S = 60.0
EXAMPLE_DEADLINE_MS = 90_000

FUZZ_CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "database": "none"},
        # Only the fuzzing phase: the coverage phase adds hundreds of boundary cases per operation and the
        # stateful one chains calls; neither is bounded by max-examples.
        "phases": {
            "examples": {"enabled": False},
            "coverage": {"enabled": False},
            "stateful": {"enabled": False},
        },
        "headers": AUTH,
    }
)


@pytest.fixture(scope="module")
def fuzz_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gateway_settings = make_settings(
        tmp_path_factory.mktemp("gateway-fuzz"),
        gateway_triton_url=triton_server.grpc_url,
        request_timeout_s=REQUEST_TIMEOUT_S,
        api_keys=[API_KEY],
        max_text_length=FUZZ_MAX_TEXT_LENGTH,
    )
    with serve_in_thread(create_app(settings=gateway_settings)) as url:
        yield url


@pytest.fixture(scope="module")
def reference_clip() -> bytes:
    """3.5 s of Ogg Vorbis at 8 kHz: 5 kB, so a failing case's reproduction command stays readable."""
    return clip(3.5, fmt="ogg", sample_rate=8000)


@pytest.fixture(scope="module")
def stored_voice(fuzz_gateway: str, reference_clip: bytes) -> str:
    """A voice in the library, so that fuzzed syntheses also take the stored-prompt path."""
    body = {"ref_audio": base64.b64encode(reference_clip).decode(), "x_vector_only": True}
    response = httpx.post(f"{fuzz_gateway}/voices", json=body, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 201, response.text
    return response.json()["voice"]


@pytest.fixture(scope="module")
def gateway_schema(fuzz_gateway: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_gateway}/openapi.json", config=FUZZ_CONFIG)


schema = schemathesis.pytest.from_fixture("gateway_schema")


def _with_real_inputs(case: schemathesis.Case, data: st.DataObject, audio: bytes, voice: str) -> None:
    """Sometimes swap in what random generation cannot make: a decodable reference clip (random bytes
    only ever test the 400 for undecodable audio) and a voice that exists in the library."""
    if not isinstance(case.body, dict):
        return
    if "ref_audio" in case.body and data.draw(st.booleans(), label="real reference clip"):
        is_json = (case.media_type or "").endswith("json")
        case.body["ref_audio"] = base64.b64encode(audio).decode() if is_json else audio
    if "voice" in case.body and data.draw(st.booleans(), label="stored voice"):
        case.body["voice"] = voice


@schema.parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=EXAMPLE_DEADLINE_MS,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(
    case: schemathesis.Case, data: st.DataObject, reference_clip: bytes, stored_voice: str
) -> None:
    _with_real_inputs(case, data, reference_clip, stored_voice)
    response = case.call(headers=AUTH, timeout=REQUEST_TIMEOUT_S)
    case.validate_response(response, checks=[not_a_server_error])
