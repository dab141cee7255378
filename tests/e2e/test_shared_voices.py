"""Scale-out, end to end: two gateway processes (uvicorn, as deployed) on one real PostgreSQL voice library
and the one real tritonserver of the session. A voice saved through gateway 1 is listed by and speaks
through gateway 2, and stays invisible to another API key; a delete through one is seen by the other.

Each gateway has a cache dir of its own, so nothing is shared but the database.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from postgres import PostgresCluster

from gateway.conftest import clip
from qwen3_tts_serving.launcher.process import ManagedProcess, free_ports, http_ok
from qwen3_tts_serving.launcher.serve import GATEWAY_APP

pytestmark = pytest.mark.e2e

SHORT = {"max_new_tokens": 16, "seed": 1234}
KEYS = ("key-a", "key-b")


def gateway_process(name: str, work: Path, env: dict[str, str]) -> tuple[str, ManagedProcess]:
    port = free_ports(1)[0]
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        GATEWAY_APP,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cache_dir = work / name
    cache_dir.mkdir()
    process = ManagedProcess(
        name,
        cmd,
        env={**env, "QWEN3_TTS_CACHE_DIR": str(cache_dir)},
        log_path=work / f"{name}.log",
        cwd=cache_dir,
    )
    return f"http://127.0.0.1:{port}", process


@pytest.fixture(scope="module")
def gateways(
    triton_server: Any, postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """Two gateways started together on one fresh database (they also race to migrate it)."""
    work = tmp_path_factory.mktemp("shared-voices")
    env = {
        **os.environ,
        "QWEN3_TTS_VOICE_DB_URL": postgres_cluster.create_database(),
        "QWEN3_TTS_GATEWAY_TRITON_URL": triton_server.grpc_url,
        "QWEN3_TTS_API_KEYS": json.dumps(KEYS),
        "QWEN3_TTS_REQUEST_TIMEOUT_S": "300",
    }
    started = [gateway_process(name, work, env) for name in ("gateway-1", "gateway-2")]
    with ExitStack() as stack:
        for _, process in started:
            stack.callback(process.stop)
            process.start()
        for url, process in started:
            process.wait_until(lambda url=url: http_ok(f"{url}/health"), timeout_s=120)
        yield started[0][0], started[1][0]


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300, trust_env=False
    )


def speak(http: httpx.Client, voice: str) -> httpx.Response:
    body = {"input": "Spoken by the other gateway.", "voice": voice, "response_format": "wav", **SHORT}
    return http.post("/v1/audio/speech", json=body)


def test_a_voice_saved_through_one_gateway_speaks_through_the_other(gateways: tuple[str, str]) -> None:
    first, second = gateways
    with client(first, "key-a") as a1, client(second, "key-a") as a2, client(second, "key-b") as b2:
        reference = {
            "name": "shared",
            "ref_audio": base64.b64encode(clip(4.0)).decode(),
            "ref_text": "Words.",
        }
        created = a1.post("/voices", json=reference)
        assert created.status_code == 201, created.text
        voice = created.json()

        assert a2.get("/voices").json() == {"voices": [voice]}
        assert a2.get(f"/voices/{voice['voice']}").json() == voice
        response = speak(a2, voice["voice"])
        assert response.status_code == 200, response.text
        samples, sample_rate = sf.read(io.BytesIO(response.content), dtype="float32")
        assert sample_rate == 24_000 and samples.size > 0
        stream = a2.post("/synthesize/stream", json={"text": "Again.", "voice": voice["voice"], **SHORT})
        assert stream.status_code == 200 and json.loads(stream.text.splitlines()[-2])["is_last"]

        # Another API key on gateway 2 sees nothing of it.
        assert b2.get("/voices").json() == {"voices": []}
        assert b2.get(f"/voices/{voice['id']}").status_code == 404
        assert speak(b2, voice["voice"]).status_code == 404

        # Deleted through gateway 2: gone from gateway 1 too.
        assert a2.delete(f"/voices/{voice['id']}").status_code == 204
        assert a1.get(f"/voices/{voice['id']}").status_code == 404
        assert speak(a1, voice["voice"]).status_code == 404
