"""``qwen3-tts-serve`` keeps serving when its tritonserver is killed: the real command, the real server and
gateway, the tiny checkpoints, one model (``--models custom_voice``) to keep the start short.

The tritonserver is killed with SIGKILL in the middle of a stream: the stream ends with an in-band 503 line,
the gateway answers 503 + Retry-After (and /ready 503) while the server is restarted, then 200 again; the
gateway process is the same one throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qwen3_tts_serving.launcher.process import free_ports
from qwen3_tts_serving.launcher.triton import SHARED_MEMORY_DIR

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 300
RESTART_BACKOFF_S = 3.0  # long enough to see the gateway answer 503 before the new server is up
SAY = {"text": "Back again.", "speaker": "ryan", "language": "english", "max_new_tokens": 8, "seed": 1}
LONG = {
    "text": "This sentence keeps the model busy for a while. " * 20,
    "speaker": "ryan",
    "max_new_tokens": 2000,
    "seed": 5,
}


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def child(self, name: str) -> int:
        """The pid of the live child named ``name`` (tritonserver), or running uvicorn (the gateway)."""
        for pid, (command, cmdline) in _children(self.process.pid).items():
            if command == name or (name == "gateway" and "uvicorn" in cmdline):
                return pid
        raise LookupError(f"no {name} child of qwen3-tts-serve; its log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _children(parent: int) -> dict[int, tuple[str, list[str]]]:
    """Live children of ``parent``: pid -> (command name, command line), read from /proc."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": the name may hold spaces and parentheses, so split at the last ")".
            head, _, rest = stat.read_text().rpartition(")")
            state, ppid = rest.split()[:2]
            cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue  # it ended meanwhile
        if int(ppid) == parent and state != "Z":
            children[int(stat.parent.name)] = (head.partition("(")[2], cmdline)
    return children


def _shared_memory_regions(pid: int) -> list[Path]:
    """The Python backend's regions of the tritonserver ``pid`` (its prefix is on its command line)."""
    command = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
    flag = "--backend-config=python,shm-region-prefix-name="
    (prefix,) = [argument.removeprefix(flag) for argument in command if argument.startswith(flag)]
    return sorted(SHARED_MEMORY_DIR.glob(f"{prefix}*"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(condition: object, timeout_s: float, what: str, served: Served) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert served.process.poll() is None, (
            f"qwen3-tts-serve exited while waiting for {what}:\n{served.log()}"
        )
        assert time.monotonic() < deadline, f"{what} after {timeout_s} s; log:\n{served.log()[-4000:]}"
        time.sleep(0.5)


def _server_ready(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/ready", timeout=10)
    except httpx.HTTPError:
        return False
    # Only custom_voice is served: /ready counts the models the server holds, not every model there is.
    return response.status_code == 200 and response.json().get("models") == {"custom_voice": True}


@pytest.fixture
def served(tiny_checkpoints: Path, tmp_path: Path) -> Iterator[Served]:
    http, grpc, metrics, gateway = free_ports(4)
    env = {
        **os.environ,
        "QWEN3_TTS_CACHE_DIR": str(tmp_path / "cache"),
        "QWEN3_TTS_CHECKPOINT_DIR": str(tiny_checkpoints),
        "QWEN3_TTS_TRITON_HTTP_PORT": str(http),
        "QWEN3_TTS_TRITON_GRPC_PORT": str(grpc),
        "QWEN3_TTS_TRITON_METRICS_PORT": str(metrics),
        "QWEN3_TTS_GATEWAY_PORT": str(gateway),
        "QWEN3_TTS_TRITON_RESTART_BACKOFF_S": str(RESTART_BACKOFF_S),
        "QWEN3_TTS_API_KEYS": "[]",
        "QWEN3_TTS_REQUEST_TIMEOUT_S": "300",
    }
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "qwen3_tts_serving.launcher.serve", "--models", "custom_voice"]
    with log_path.open("wb") as log:
        # cwd: a folder without a .env, so that only the settings above apply.
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    served = Served(process, f"http://127.0.0.1:{gateway}", log_path)
    try:
        _wait_for(lambda: _server_ready(served.url), START_TIMEOUT_S, "the stack was not ready", served)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_killed_tritonserver_is_restarted_while_the_gateway_stays_up(served: Served) -> None:
    gateway = served.child("gateway")
    triton = served.child("tritonserver")
    lines: list[dict] = []
    first_line = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{served.url}/synthesize/stream", json=LONG, timeout=300) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.strip():
                    lines.append(json.loads(line))
                    first_line.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_line.wait(120), "the long stream sent nothing"
    # The killed server cannot remove its shared-memory regions; the launcher does before the restart.
    killed_regions = _shared_memory_regions(triton)
    assert killed_regions, "no shared-memory regions found for the server"
    os.kill(triton, signal.SIGKILL)
    reader.join(120)
    assert not reader.is_alive(), "the stream did not end when the server was killed"

    # The stream ends with an in-band error line, not with a cut connection.
    assert lines[0]["type"] == "chunk"
    assert lines[-1]["error"]["status"] == 503, lines[-1]
    assert not any(line.get("type") == "done" for line in lines)

    # While the server is down: 503 with Retry-After, and /ready 503.
    down = httpx.post(f"{served.url}/synthesize", json=SAY, timeout=60)
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"] == "2"
    assert down.json()["error"]["type"] == "server_overloaded"
    ready = httpx.get(f"{served.url}/ready", timeout=30)
    assert ready.status_code == 503 and ready.json()["server"] is False
    assert ready.headers["retry-after"] == "2"

    # Then the restarted server serves again, through the same gateway process.
    def synthesizes() -> bool:
        return httpx.post(f"{served.url}/synthesize", json=SAY, timeout=120).status_code == 200

    _wait_for(synthesizes, START_TIMEOUT_S, "no 200 after the restart", served)
    assert served.child("gateway") == gateway and _alive(gateway)
    assert served.child("tritonserver") != triton
    assert not [region for region in killed_regions if region.exists()], "the killed server's regions remain"
    ready = httpx.get(f"{served.url}/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["server"] is True
    log = served.log()
    assert (
        f"tritonserver was killed by SIGKILL; restarting in {RESTART_BACKOFF_S:.1f} s (attempt 1 of 5)" in log
    )
    assert "tritonserver is running again" in log
    assert served.process.poll() is None
