"""Fixtures of the client tests.

* ``scripted``: a real local HTTP server answering scripted statuses/headers/bodies (servers.py).
* ``fast_retry``: a retry policy with millisecond backoff, so retry tests take milliseconds.

The client against the real gateway and Triton is tests/e2e/test_python_client.py (``gateway_server``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from qwen3_tts_client import RetryPolicy

from .servers import ScriptedServer


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return RetryPolicy(max_retries=2, backoff_base=0.001, max_backoff=0.01, rng=random.Random(0))
