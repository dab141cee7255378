"""The gateway's backend router (engine/router.py) over stand-in backends: which backend a new stream goes
to (fewest streams, this gateway's own in flight counted between refreshes), retries before the first
chunk only, circuits that open on a backend's failure and close when its readiness is back, sessions that
stay where they started, backends from DNS, the settings' backend list, /ready with every backend, and the
drain middleware. The end-to-end proof with real tritonservers is tests/e2e/test_scale_out.py.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.backend import AudioChunk, SessionRequest, SynthesisRequest, VoicePrompt
from qwen3_tts_gateway.backend.router import BackendEntry, BackendRouter, backend_entries
from qwen3_tts_gateway.backend.triton import classify_error
from qwen3_tts_gateway.drain import DrainMiddleware, GatewayDrain
from qwen3_tts_gateway.errors import EngineError, EngineInvalidRequestError, EngineUnavailableError

from qwen3_tts_serving.settings import Settings

REQUEST = SynthesisRequest("custom_voice", "Hello.", speaker="ryan")
DOWN = ("failed to connect to all addresses", "StatusCode.UNAVAILABLE")
DRAINING = ("Request for unknown model: 'custom_voice' has no available versions", None)
INVALID = ("speaker 'x' is not supported; valid: ryan", "StatusCode.INVALID_ARGUMENT")


def chunk(sequence: int, last: bool = False) -> AudioChunk:
    return AudioChunk(np.zeros(240, np.float32), 24_000, sequence, last, "stop" if last else "")


class StandIn:
    """One backend: ready or not, its models, and how its next streams behave."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_ready = True
        self.models: dict[str, bool] | None = None
        self.fail_before: tuple[str, str | None] | None = None
        self.fail_after_first: tuple[str, str | None] | None = None
        self.hold: asyncio.Event | None = None
        self.streams = 0
        self.sessions = 0
        self.prompts = 0
        self.closed = False

    async def ready(self, timeout_s: float = 5.0, *, log: bool = True) -> bool:
        return self.is_ready

    async def model_states(self, timeout_s: float = 5.0) -> dict[str, bool] | None:
        return self.models

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        self.streams += 1
        if self.fail_before:
            raise classify_error(*self.fail_before)
        yield chunk(0)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_after_first:
            raise classify_error(*self.fail_after_first)
        yield chunk(1, last=True)

    async def open_session(self, request: SessionRequest) -> Any:
        self.sessions += 1
        return StandInSession(self)

    async def create_voice_prompt(self, *args: Any) -> VoicePrompt:
        self.prompts += 1
        if self.fail_before:
            raise classify_error(*self.fail_before)
        return VoicePrompt(np.zeros(4, np.float32), np.zeros((0, 16), np.int64), None, True)

    async def close(self) -> None:
        self.closed = True


class StandInSession:
    session_id = "s1"

    def __init__(self, backend: StandIn) -> None:
        self.backend = backend

    async def send_text(self, text: str, *, flush: bool = False) -> None: ...

    async def end(self, text: str = "") -> None: ...

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self.backend.stream(REQUEST)

    async def aclose(self) -> None: ...


class Cluster:
    def __init__(self, *names: str, cooldown_s: float = 0.0, seed: int = 0) -> None:
        self.backends = {name: StandIn(name) for name in names}
        self.metrics: dict[str, str] = {}
        self.addresses: dict[str, list[str]] = {}
        entries = [BackendEntry(name, 8001, "http://{host}:8002/metrics") for name in names]
        self.router = BackendRouter(
            entries,
            self._engine,
            refresh_s=3600,  # the tests refresh by hand
            cooldown_s=cooldown_s,
            resolver=self._resolve,
            metrics_reader=self._read,
            rng=random.Random(seed),
        )

    def _engine(self, address: str) -> StandIn:
        host = address.rsplit(":", 1)[0]
        return self.backends.setdefault(host, StandIn(host))

    async def _resolve(self, host: str, port: int) -> list[str]:
        return self.addresses.get(host, [host])

    async def _read(self, url: str) -> str:
        host = url.split("//")[1].split(":")[0]
        if host not in self.metrics:
            raise httpx.ConnectError("refused")
        return self.metrics[host]

    def load(self, host: str, active: int, queued: int = 0) -> None:
        self.metrics[host] = "\n".join(
            [
                f'qwen3_tts_active_streams{{model="custom_voice"}} {active}',
                f'qwen3_tts_queued_streams{{model="custom_voice"}} {queued}',
                'qwen3_tts_active_streams{model="voice_design"} 0',
            ]
        )

    def backend(self, name: str) -> Any:
        return next(b for b in self.router.backends if b.address == f"{name}:8001")


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    made = Cluster("a", "b")
    await made.router.start()
    yield made
    await made.router.close()


async def consume(source: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    return [item async for item in source]


async def test_a_new_stream_goes_to_the_backend_with_fewest_streams(cluster: Cluster) -> None:
    cluster.load("a", 3, queued=2)
    cluster.load("b", 4)
    await cluster.router.refresh()
    assert cluster.backend("a").engine_streams == 5 and cluster.backend("b").engine_streams == 4
    await consume(cluster.router.stream(REQUEST))
    assert (cluster.backends["a"].streams, cluster.backends["b"].streams) == (0, 1)


async def test_equal_backends_are_picked_at_random() -> None:
    picks = set()
    for seed in range(8):
        made = Cluster("a", "b", seed=seed)
        await made.router.start()
        picks.add(made.router.pick("custom_voice").address)  # type: ignore[union-attr]
        await made.router.close()
    assert picks == {"a:8001", "b:8001"}


async def test_a_burst_between_refreshes_spreads_by_the_streams_this_gateway_has_open(
    cluster: Cluster,
) -> None:
    for backend in cluster.backends.values():
        backend.hold = asyncio.Event()
    streams = [cluster.router.stream(REQUEST) for _ in range(6)]
    for source in streams:
        await anext(source)  # each open, holding its backend
    assert (cluster.backends["a"].streams, cluster.backends["b"].streams) == (3, 3)
    assert [b.open for b in cluster.router.backends] == [3, 3]

    # The engines now report them: the scrape counts them once, not on top of this gateway's own.
    cluster.load("a", 3)
    cluster.load("b", 3 + 4)  # another gateway's 4 streams on b
    await cluster.router.refresh()
    assert cluster.backend("a").load == 3 and cluster.backend("b").load == 7
    for backend in cluster.backends.values():
        backend.hold.set()  # type: ignore[union-attr]
    for source in streams:
        assert [c.sequence for c in await consume(source)] == [1]
    assert [b.open for b in cluster.router.backends] == [0, 0]
    assert cluster.backend("a").load == 0 and cluster.backend("b").load == 4


async def test_a_backend_that_fails_before_the_first_chunk_is_retried_on_another(cluster: Cluster) -> None:
    for failure in (DOWN, DRAINING):
        cluster.backends["a"].fail_before = failure
        cluster.load("a", 0)
        cluster.load("b", 5)  # a looks best
        await cluster.router.refresh()
        assert cluster.backend("a").in_rotation
        before = cluster.backends["b"].streams
        chunks = await consume(cluster.router.stream(REQUEST))
        assert [c.sequence for c in chunks] == [0, 1] and cluster.backends["b"].streams == before + 1
        assert cluster.backend("a").circuit_opened_at is not None and not cluster.backend("a").in_rotation
        assert cluster.router.pick("custom_voice").address == "b:8001"  # type: ignore[union-attr]
        cluster.backends["a"].fail_before = None
        await cluster.router.refresh()  # ready again (no cooldown here): back in the rotation
        assert cluster.backend("a").in_rotation


async def test_an_invalid_request_is_not_retried(cluster: Cluster) -> None:
    cluster.backends["a"].fail_before = cluster.backends["b"].fail_before = INVALID
    with pytest.raises(EngineInvalidRequestError):
        await consume(cluster.router.stream(REQUEST))
    assert cluster.backends["a"].streams + cluster.backends["b"].streams == 1
    assert all(backend.in_rotation for backend in cluster.router.backends)


async def test_every_backend_failing_answers_the_last_error(cluster: Cluster) -> None:
    cluster.backends["a"].fail_before = cluster.backends["b"].fail_before = DOWN
    with pytest.raises(EngineUnavailableError, match="unavailable"):
        await consume(cluster.router.stream(REQUEST))
    assert (cluster.backends["a"].streams, cluster.backends["b"].streams) == (1, 1)
    with pytest.raises(EngineUnavailableError, match="no model server is ready"):
        await consume(cluster.router.stream(REQUEST))  # both circuits are open


async def test_a_backend_that_dies_mid_stream_ends_only_that_stream(cluster: Cluster) -> None:
    cluster.load("b", 9)
    await cluster.router.refresh()
    cluster.backends["a"].fail_after_first = DOWN
    received: list[AudioChunk] = []
    with pytest.raises(EngineUnavailableError, match="went away") as caught:
        async for item in cluster.router.stream(REQUEST):
            received.append(item)
    assert [c.sequence for c in received] == [0]  # what reached the client is never replayed elsewhere
    assert caught.value.status_code == 503
    assert cluster.backends["b"].streams == 0
    assert not cluster.backend("a").in_rotation and cluster.backend("a").open == 0
    # New streams go to b; a comes back once its readiness does (and the cooldown passed).
    assert [c.sequence for c in await consume(cluster.router.stream(REQUEST))] == [0, 1]
    assert cluster.backends["b"].streams == 1


async def test_the_circuit_stays_open_until_readiness_is_back_and_the_cooldown_passed() -> None:
    made = Cluster("a", "b", cooldown_s=0.3)
    await made.router.start()
    made.load("b", 5)
    await made.router.refresh()
    made.backends["a"].fail_before = DOWN
    made.backends["a"].is_ready = False  # killed (the last poll still said ready)
    await consume(made.router.stream(REQUEST))
    assert made.backends["a"].streams == 1 and made.backends["b"].streams == 1
    await made.router.refresh()
    assert not made.backend("a").in_rotation
    made.backends["a"].is_ready = True
    made.backends["a"].fail_before = None
    await made.router.refresh()
    assert not made.backend("a").in_rotation  # ready, but within the cooldown
    await asyncio.sleep(0.35)
    await made.router.refresh()
    assert made.backend("a").in_rotation
    await made.router.close()


async def test_a_backend_that_is_not_ready_or_lacks_the_model_gets_nothing(cluster: Cluster) -> None:
    cluster.backends["a"].is_ready = False
    cluster.backends["b"].models = {"custom_voice": False, "voice_design": True}
    await cluster.router.refresh()
    with pytest.raises(EngineUnavailableError, match="no model server is ready for custom_voice"):
        await consume(cluster.router.stream(REQUEST))
    assert not await cluster.router.model_ready("custom_voice")
    assert await cluster.router.model_ready("voice_design") and await cluster.router.ready()
    assert await cluster.router.served_models() == ("custom_voice", "voice_design")
    assert cluster.backends["a"].streams == cluster.backends["b"].streams == 0


async def test_a_session_stays_on_its_backend_and_counts_there_while_open(cluster: Cluster) -> None:
    request = SessionRequest(REQUEST)
    session = await cluster.router.open_session(request)
    (home,) = [b for b in cluster.router.backends if b.open == 1]
    assert [c.sequence async for c in session] == [0, 1]
    assert home.open == 0
    await session.aclose()
    assert home.open == 0  # released once

    cluster.backends[home.address.split(":")[0]].fail_after_first = DOWN
    cluster.load(home.address.split(":")[0], 0)
    other = next(b for b in cluster.router.backends if b is not home)
    cluster.load(other.address.split(":")[0], 9)
    await cluster.router.refresh()
    session = await cluster.router.open_session(request)
    with pytest.raises(EngineUnavailableError, match="went away"):
        [c async for c in session]
    assert not home.in_rotation and home.open == 0


async def test_a_voice_prompt_is_retried_on_another_backend(cluster: Cluster) -> None:
    cluster.backends["a"].fail_before = DOWN
    cluster.load("b", 9)
    await cluster.router.refresh()
    prompt = await cluster.router.create_voice_prompt(np.zeros(10, np.float32), 24_000, None, True)
    assert prompt.x_vector_only
    assert (cluster.backends["a"].prompts, cluster.backends["b"].prompts) == (1, 1)


async def test_a_name_resolving_to_several_addresses_is_a_backend_per_address() -> None:
    made = Cluster("triton")
    made.addresses["triton"] = ["10.0.0.1", "10.0.0.2"]
    await made.router.start()
    assert sorted(b.address for b in made.router.backends) == ["10.0.0.1:8001", "10.0.0.2:8001"]
    assert made.backend("10.0.0.1").metrics_url == "http://10.0.0.1:8002/metrics"
    made.backends["10.0.0.2"].hold = asyncio.Event()
    made.load("10.0.0.1", 9)
    made.load("10.0.0.2", 0)
    await made.router.refresh()
    held = made.router.stream(REQUEST)
    await anext(held)
    assert made.backend("10.0.0.2").open == 1

    made.addresses["triton"] = ["10.0.0.1", "10.0.0.3"]  # a pod left, another came
    await made.router.resolve_backends()
    await made.router.refresh()
    leaving = made.backend("10.0.0.2")
    assert leaving.retired and not leaving.in_rotation and not made.backends["10.0.0.2"].closed
    made.backends["10.0.0.2"].hold.set()  # type: ignore[union-attr]
    await consume(held)  # its stream finishes there
    await made.router.refresh()
    assert sorted(b.address for b in made.router.backends) == ["10.0.0.1:8001", "10.0.0.3:8001"]
    assert made.backends["10.0.0.2"].closed
    await made.router.close()


def test_the_settings_name_the_backends(tmp_path: Path) -> None:
    def entries(**values: Any) -> list[BackendEntry]:
        return backend_entries(Settings(_env_file=None, cache_dir=tmp_path, **values))  # type: ignore[call-arg]

    assert entries() == [BackendEntry("127.0.0.1", 8001, "http://{host}:8002/metrics")]
    assert entries(gateway_triton_url="t1:9001, [::1]:9002", triton_metrics_port=9100) == [
        BackendEntry("t1", 9001, "http://{host}:9100/metrics"),
        BackendEntry("::1", 9002, "http://{host}:9100/metrics"),
    ]
    two = entries(gateway_triton_url="t1:1,t2:2", gateway_triton_metrics_url="http://m1/x,http://m2/y")
    assert [e.metrics_url for e in two] == ["http://m1/x", "http://m2/y"]
    with pytest.raises(ValueError, match="3 URLs for 2 backends"):
        entries(gateway_triton_url="t1:1,t2:2", gateway_triton_metrics_url="a,b,c")
    with pytest.raises(ValueError, match="must be host:port"):
        entries(gateway_triton_url="t1")


async def test_ready_lists_every_backend(tmp_path: Path) -> None:
    made = Cluster("a", "b")
    settings = Settings(_env_file=None, cache_dir=tmp_path, voice_db_path=tmp_path / "v.db")  # type: ignore[call-arg]
    app = create_app(settings=settings, engine=made.router)
    made.backends["b"].is_ready = False
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get("/ready")
        assert response.status_code == 200
        states = {b["address"]: b for b in response.json()["backends"]}
        assert states["a:8001"]["ready"] and states["a:8001"]["in_rotation"]
        assert not states["b:8001"]["ready"] and not states["b:8001"]["in_rotation"]
        made.backends["a"].is_ready = False
        await made.router.refresh()
        response = await client.get("/ready")
        assert response.status_code == 503 and not response.json()["server"]
        app.state.drain.draining = True
        made.backends["a"].is_ready = True
        await made.router.refresh()
        response = await client.get("/ready")
        assert response.status_code == 503 and response.json()["draining"] is True
    await made.router.close()


async def test_the_drain_waits_for_open_requests_and_refuses_new_ones() -> None:
    release = asyncio.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    drain = GatewayDrain(timeout_s=5.0)
    middleware = DrainMiddleware(app, drain, retry_after_s=3)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    def scope(path: str, kind: str = "http") -> dict:
        return {"type": kind, "path": path, "method": "GET"}

    open_request = asyncio.ensure_future(middleware(scope("/synthesize/stream"), None, send))
    await asyncio.sleep(0)
    assert drain.open == 1
    shut_down = asyncio.Event()
    drainer = asyncio.ensure_future(drain.drain_then(shut_down.set))
    await asyncio.sleep(0.05)
    assert drain.draining and not shut_down.is_set()

    refused: list[dict] = []

    async def collect(message: dict) -> None:
        refused.append(message)

    await middleware(scope("/v1/audio/speech"), None, collect)
    assert refused[0]["status"] == 503 and (b"retry-after", b"3") in refused[0]["headers"]
    assert json.loads(refused[1]["body"])["error"]["status"] == 503
    refused.clear()
    # A server with the ASGI WebSocket denial response answers the handshake like an HTTP request (a close
    # before accepting would reach the client as a bare 403); without it, the close says try again later.
    await middleware(
        {**scope("/ws/session", "websocket"), "extensions": {"websocket.http.response": {}}}, None, collect
    )
    assert refused[0]["type"] == "websocket.http.response.start" and refused[0]["status"] == 503
    assert (b"retry-after", b"3") in refused[0]["headers"]
    assert json.loads(refused[1]["body"])["error"]["status"] == 503
    refused.clear()
    await middleware(scope("/ws/session", "websocket"), None, collect)
    assert refused == [{"type": "websocket.close", "code": 1013, "reason": "shutting down"}]

    release.set()
    await open_request
    await asyncio.wait_for(drainer, 2)
    assert shut_down.is_set() and sent[0]["status"] == 200


async def test_the_drain_gives_up_after_its_timeout() -> None:
    drain = GatewayDrain(timeout_s=0.2)
    drain.open = 1  # a request that never ends
    shut_down = asyncio.Event()
    await asyncio.wait_for(drain.drain_then(shut_down.set), 2)
    assert shut_down.is_set()


def test_errors_of_the_engine_carry_their_kind() -> None:
    error = classify_error(*DRAINING)
    assert isinstance(error, EngineError) and error.kind is not None and error.kind.value == "not_found"
