"""Scale-out, end to end on the CPU: two real tritonservers (the launcher's ``TritonServer``, tiny
checkpoints, only ``custom_voice``), two gateway processes (uvicorn, as deployed) routing over both, one
real PostgreSQL voice library. Load runs through both gateways the whole time.

* the load spreads over both backends: each backend's own engine metrics count streams;
* one backend drained (SIGTERM) under load: no started stream is cut, no new request fails; restarted,
  it serves again;
* one backend killed (SIGKILL) under load: only streams in flight there end, each with the in-band error
  line (503); every request started after the kill succeeds on the other; restarted, it rejoins both
  gateways' rotation and takes streams again, without restarting a gateway;
* a gateway drained (SIGTERM) with a WebSocket stream and an HTTP stream open: both finish, new requests
  get 503, then it exits.

A voice saved through one gateway speaking through the other is test_shared_voices.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres import PostgresCluster
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from qwen3_tts_serving import engine_metrics
from qwen3_tts_serving.launcher import TritonServer, build_model_repository
from qwen3_tts_serving.launcher.process import ManagedProcess, http_ok

from .conftest import own_server_settings
from .test_shared_voices import gateway_process

pytestmark = pytest.mark.e2e

MODEL = "custom_voice"
WORKERS_PER_GATEWAY = 2
SPEAK = {"text": "Spread over two servers, one stream at a time.", "speaker": "ryan", "max_new_tokens": 90}
FINISHED = "qwen3_tts_finished_total"


@dataclass
class Outcome:
    """One /synthesize/stream request as a client saw it."""

    gateway: str
    started: float
    status: int = 0
    chunks: int = 0
    done: bool = False
    error: dict[str, Any] | None = None
    ended: float = 0.0


def stream_once(gateway: str, seed: int, **overrides: Any) -> Outcome:
    outcome = Outcome(gateway, time.monotonic())
    body = {**SPEAK, "seed": seed, **overrides}
    try:
        with httpx.stream(
            "POST", f"{gateway}/synthesize/stream", json=body, timeout=120, trust_env=False
        ) as response:
            outcome.status = response.status_code
            if response.status_code != 200:
                outcome.error = json.loads(response.read())
            for line in response.iter_lines() if response.status_code == 200 else ():
                message = json.loads(line)
                if message.get("type") == "chunk":
                    outcome.chunks += 1
                elif message.get("type") == "done":
                    outcome.done = True
                else:
                    outcome.error = message
    except httpx.HTTPError as exc:
        outcome.error = {"transport": repr(exc)}
    outcome.ended = time.monotonic()
    return outcome


class Load:
    """Workers streaming back to back through every gateway until stopped."""

    def __init__(self, gateways: list[str]) -> None:
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, args=(gateway, n), daemon=True)
            for gateway in gateways
            for n in range(WORKERS_PER_GATEWAY)
        ]
        self._seed = 0

    def _work(self, gateway: str, worker: int) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._seed += 1
                seed = self._seed
            outcome = stream_once(gateway, seed)
            with self._lock:
                self.outcomes.append(outcome)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)


@dataclass
class Backend:
    server: TritonServer
    stops: list[int] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        try:
            text = httpx.get(self.server.metrics_url, timeout=5, trust_env=False).text
        except httpx.HTTPError:
            return {}
        return engine_metrics.parse(text, MODEL)

    def finished(self) -> float:
        return sum(value for name, value in self.figures().items() if name.startswith(FINISHED))

    def active(self) -> float:
        return self.figures().get(engine_metrics.ACTIVE_STREAMS, 0.0)


@dataclass
class Stack:
    backends: list[Backend]
    gateways: list[str]
    processes: list[ManagedProcess]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.1)


def in_rotation(gateway: str, address: str) -> bool:
    try:
        states = httpx.get(f"{gateway}/ready", timeout=5, trust_env=False).json().get("backends", [])
    except httpx.HTTPError:
        return False
    return any(state["address"] == address and state["in_rotation"] for state in states)


@pytest.fixture(scope="module")
def stack(
    tiny_checkpoints: Path, postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("scale-out")
    settings = own_server_settings(work, tiny_checkpoints, triton_drain_timeout_s=60.0)
    repository = build_model_repository(settings, work / "model_repository", [MODEL])
    servers = [TritonServer(repository, settings, log_path=work / f"triton-{n}.log") for n in (1, 2)]
    with ExitStack() as stack:
        for server in servers:
            stack.callback(server.stop)
        for server in servers:  # from this thread: a child gets SIGTERM when the thread that forked it ends
            server.start()
        env = {
            **os.environ,
            "QWEN3_TTS_VOICE_DB_URL": postgres_cluster.create_database(),
            "QWEN3_TTS_GATEWAY_TRITON_URL": ",".join(server.grpc_url for server in servers),
            "QWEN3_TTS_GATEWAY_TRITON_METRICS_URL": ",".join(server.metrics_url for server in servers),
            "QWEN3_TTS_GATEWAY_BACKEND_REFRESH_S": "0.5",
            "QWEN3_TTS_GATEWAY_CIRCUIT_COOLDOWN_S": "1",
            "QWEN3_TTS_GATEWAY_DRAIN_TIMEOUT_S": "60",
            "QWEN3_TTS_API_KEYS": "[]",
            "QWEN3_TTS_REQUEST_TIMEOUT_S": "120",
        }
        started = [gateway_process(name, work, env) for name in ("gateway-1", "gateway-2")]
        for _, process in started:
            stack.callback(process.stop)
            process.start()
        for url, process in started:
            process.wait_until(lambda url=url: http_ok(f"{url}/ready"), timeout_s=120)
        yield Stack(
            [Backend(server) for server in servers], [url for url, _ in started], [p for _, p in started]
        )


@pytest.fixture(autouse=True)
def backends_restored(stack: Stack) -> Iterator[None]:
    """A test that stopped a backend and failed before restarting it leaves it running again: the next test
    fails for its own reasons, not for a backend missing."""
    yield
    for backend in stack.backends:
        if not backend.server.is_running:
            backend.server.restart()
            address = backend.server.grpc_url
            for gateway in stack.gateways:
                wait_for(lambda g=gateway, a=address: in_rotation(g, a), 30, "backend restored")


def test_load_through_both_gateways_spreads_over_both_backends(stack: Stack) -> None:
    before = [backend.finished() for backend in stack.backends]
    busy = [False, False]
    with Load(stack.gateways) as load:
        deadline = time.monotonic() + 60
        while not all(busy) or load.count() < 12:
            assert time.monotonic() < deadline, f"busy {busy} after {load.count()} requests"
            for index, backend in enumerate(stack.backends):
                busy[index] = busy[index] or backend.active() > 0
            time.sleep(0.2)
    outcomes = load.outcomes
    assert all(o.status == 200 and o.done and o.error is None for o in outcomes), outcomes

    def served() -> list[float]:
        return [backend.finished() - start for backend, start in zip(stack.backends, before, strict=True)]

    # Each backend's own metrics: every stream was counted by one of them, and each took a fair share.
    wait_for(lambda: sum(served()) == len(outcomes), 10, f"{len(outcomes)} streams in the engines' metrics")
    shares = served()
    assert min(shares) >= len(outcomes) / 4, shares
    for gateway in stack.gateways:
        ready = httpx.get(f"{gateway}/ready", timeout=5, trust_env=False).json()
        assert [state["in_rotation"] for state in ready["backends"]] == [True, True]


def test_a_backend_drained_under_load_cuts_no_stream_and_fails_no_request(stack: Stack) -> None:
    drained = stack.backends[0]
    address = drained.server.grpc_url
    with Load(stack.gateways) as load:
        wait_for(lambda: drained.active() > 0, 60, "the first backend streaming")
        stopper = threading.Thread(target=drained.server.stop)  # SIGTERM, then waits for the exit
        stopper.start()
        sigterm_at = time.monotonic()
        stopper.join(timeout=120)
        assert not drained.server.is_running and drained.server.returncode == 0, drained.server.log_tail()
        drained_at = time.monotonic()
        wait_for(lambda: load.count() > 0 and load.outcomes[-1].started > drained_at, 60, "more requests")
    outcomes = load.outcomes
    during = [o for o in outcomes if o.started < drained_at and o.ended > sigterm_at]
    assert during, "no request overlapped the drain"
    assert all(o.status == 200 and o.done and o.error is None for o in outcomes), [
        o for o in outcomes if not o.done
    ]
    for gateway in stack.gateways:
        assert not in_rotation(gateway, address)

    drained.server.restart()  # same ports: the gateways find it again
    for gateway in stack.gateways:
        wait_for(lambda gateway=gateway: in_rotation(gateway, address), 30, "the restarted backend back")


def test_a_backend_killed_under_load_ends_only_its_streams_and_rejoins(stack: Stack) -> None:
    killed = stack.backends[1]
    address = killed.server.grpc_url
    with Load(stack.gateways) as load:
        wait_for(lambda: killed.active() > 0, 60, "the second backend streaming")
        assert killed.server.pid is not None
        os.kill(killed.server.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: load.count() > 0 and load.outcomes[-1].started > killed_at + 3, 60, "more requests")
    outcomes = load.outcomes
    cut = [o for o in outcomes if o.error is not None]
    assert cut, "no stream was in flight on the killed backend"
    for outcome in cut:  # started before the kill, ended by it, after audio had reached the client
        assert outcome.started < killed_at and outcome.status == 200 and outcome.chunks > 0, outcome
        assert outcome.error == {"error": outcome.error["error"]} and outcome.error["error"]["status"] == 503
        assert "went away" in outcome.error["error"]["message"]
    after = [o for o in outcomes if o.started > killed_at]
    assert after and all(o.status == 200 and o.done for o in after), [o for o in after if not o.done]
    assert len(cut) <= WORKERS_PER_GATEWAY * len(stack.gateways)

    killed.server.restart()
    for gateway in stack.gateways:
        wait_for(lambda gateway=gateway: in_rotation(gateway, address), 30, "the restarted backend back")
    before = killed.finished()
    with Load(stack.gateways) as load:
        wait_for(lambda: killed.finished() > before, 60, "streams on the rejoined backend")
    assert all(o.status == 200 and o.done for o in load.outcomes)


def test_a_gateway_drains_its_open_streams_before_it_exits(stack: Stack) -> None:
    gateway, process = stack.gateways[1], stack.processes[1]
    long = {**SPEAK, "max_new_tokens": 200, "seed": 7}
    http_stream: list[Outcome] = []
    streamer = threading.Thread(
        target=lambda: http_stream.append(stream_once(gateway, 11, max_new_tokens=200))
    )
    ws_url = gateway.replace("http://", "ws://") + "/ws/synthesize"
    with ws_connect(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps({**long, "stream_format": "json"}))
        assert json.loads(ws.recv(timeout=60))["type"] == "start"
        streamer.start()
        time.sleep(1.0)  # its request has reached the gateway
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{gateway}/ready", trust_env=False).status_code == 503, 10, "not ready")
        assert httpx.get(f"{gateway}/ready", trust_env=False).json()["draining"] is True
        refused = httpx.post(f"{gateway}/synthesize/stream", json=SPEAK, trust_env=False)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        with pytest.raises(InvalidStatus) as denied:  # a new WebSocket's handshake is answered the same way
            ws_connect(ws_url, open_timeout=10)
        assert denied.value.response.status_code == 503 and denied.value.response.headers["retry-after"]
        messages = []
        while (message := json.loads(ws.recv(timeout=60)))["type"] == "chunk":
            messages.append(message)
        assert message["type"] == "done" and message["finish_reason"] in ("stop", "length", "repetition")
        assert messages
    streamer.join(timeout=60)
    assert http_stream and http_stream[0].done and http_stream[0].error is None
    wait_for(lambda: not process.is_running, 30, "the drained gateway exited")
    # uvicorn re-raises the SIGTERM it handled once it has shut down: killed by SIGTERM means a clean exit.
    assert process.returncode in (0, -signal.SIGTERM)
