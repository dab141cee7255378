"""``TTSEngine`` over several Triton backends: each new stream goes to the least loaded ready one.

Backends come from ``gateway_triton_url``: gRPC ``host:port`` entries, comma-separated; a name that
resolves to several addresses (a headless Kubernetes Service) is one backend per address, resolved again
every ``gateway_backend_resolve_s``. Every ``gateway_backend_refresh_s`` each backend's readiness (the server
and its models, over gRPC) and its engines' active + queued streams (``qwen3_tts_*`` on its metrics port)
are refreshed in the background.

Routing, per new stream, session or voice prompt: among the backends that are ready, hold the model and
whose circuit is closed, the one with the fewest streams. A backend's streams are its engines' figures at
the last refresh, less the streams this gateway had open there then, plus those it has open now: a burst
between two refreshes spreads, and no stream counts twice. Ties go to a random one, so gateways that start
together do not all pick the same backend.

Failures:

* before the first audio chunk (nothing has reached the client yet): a backend that is unreachable,
  shutting down or unloading the model, overloaded or out of memory: the request is tried on another
  backend (each backend once);
* mid-stream, a backend that went away ends that stream with :class:`EngineUnavailableError` (the routes
  turn it into their in-band error line or event);
* either way an unreachable or unavailable backend's circuit opens: it leaves the rotation until its
  readiness is back, at least ``gateway_circuit_cooldown_s`` later.

A session stays on the backend that started it (its state lives in that backend's engine).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import numpy as np

from qwen3_tts_serving import contract, engine_metrics
from qwen3_tts_serving.contract import ErrorKind
from qwen3_tts_serving.settings import Settings

from ..errors import EngineError, EngineUnavailableError
from .base import VOICE_PROMPT_MODEL, AudioChunk, EngineSession, SessionRequest, SynthesisRequest, VoicePrompt
from .triton import TritonEngine

logger = logging.getLogger(__name__)

# Failures that say nothing about the request: another backend may well serve it.
RETRY_ELSEWHERE = frozenset(
    {
        ErrorKind.CONNECT,
        ErrorKind.UNAVAILABLE,
        ErrorKind.NOT_FOUND,  # the model is being unloaded (a draining server) or not held there
        ErrorKind.OVERLOADED,
        ErrorKind.OUT_OF_MEMORY,
    }
)
# Failures of the backend itself: it leaves the rotation until its readiness is back.
BACKEND_DOWN = frozenset({ErrorKind.CONNECT, ErrorKind.UNAVAILABLE, ErrorKind.NOT_FOUND})
_PROBE_TIMEOUT_S = (1.0, 5.0)  # a readiness/metrics probe's timeout: twice the refresh, within these bounds


class BackendEngine(Protocol):
    """What the router needs of one backend (:class:`TritonEngine`)."""

    async def ready(self, timeout_s: float = 5.0, *, log: bool = True) -> bool: ...

    async def model_states(self, timeout_s: float = 5.0) -> dict[str, bool] | None: ...

    def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]: ...

    async def open_session(self, request: SessionRequest) -> EngineSession: ...

    async def create_voice_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None, x_vector_only: bool
    ) -> VoicePrompt: ...

    async def close(self) -> None: ...


Resolver = Callable[[str, int], Awaitable[list[str]]]
MetricsReader = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class BackendEntry:
    """One entry of ``gateway_triton_url``: a host (name or address), its gRPC port and a metrics URL
    template in which ``{host}`` stands for each address the host resolves to."""

    host: str
    port: int
    metrics_url: str


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError naming the expected form otherwise."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"backend address {address!r} must be host:port")
    return host.strip("[]"), int(port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def backend_entries(settings: Settings) -> list[BackendEntry]:
    """The backends the settings name (see ``gateway_triton_url`` and ``gateway_triton_metrics_url``)."""
    urls = settings.gateway_triton_url or f"{settings.triton_host}:{settings.triton_grpc_port}"
    addresses = [part.strip() for part in urls.split(",") if part.strip()]
    if not addresses:
        raise ValueError("gateway_triton_url names no backend; expected host:port[,host:port...]")
    default_metrics = f"http://{{host}}:{settings.triton_metrics_port}/metrics"
    metrics = [part.strip() for part in (settings.gateway_triton_metrics_url or default_metrics).split(",")]
    if len(metrics) not in (1, len(addresses)):
        raise ValueError(
            f"gateway_triton_metrics_url has {len(metrics)} URLs for {len(addresses)} backends; "
            "give one per backend or one for all"
        )
    if len(metrics) == 1:
        metrics *= len(addresses)
    return [
        BackendEntry(*split_host_port(address), url) for address, url in zip(addresses, metrics, strict=True)
    ]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(host: str, port: int) -> list[str]:
    """The addresses to treat as backends for ``host``: the host itself when it is an address or resolves
    to one address (gRPC then resolves it as usual), else each address (IPv4 when it has any)."""
    if _is_address(host):
        return [host]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = sorted({str(info[4][0]) for info in infos if info[0] == socket.AF_INET})
    v6 = sorted({str(info[4][0]) for info in infos if info[0] == socket.AF_INET6})
    addresses = v4 or v6
    return addresses if len(addresses) > 1 else [host]


async def read_metrics(url: str, client: httpx.AsyncClient, timeout_s: float) -> str:
    response = await client.get(url, timeout=timeout_s)
    response.raise_for_status()
    return response.text


class Backend:
    """One Triton server as the router sees it."""

    def __init__(self, address: str, engine: BackendEngine, metrics_url: str) -> None:
        self.address = address
        self.engine = engine
        self.metrics_url = metrics_url
        self.ready: bool | None = None  # None: not probed yet (in the rotation meanwhile)
        self.models: dict[str, bool] | None = None  # None: unknown, every model assumed
        self.engine_streams: float | None = None  # active + queued in its engines, all gateways
        self.open = 0  # this gateway's streams, sessions and prompt calls on it now
        self.circuit_opened_at: float | None = None
        self.retired = False  # its address is gone from DNS: no new work, closed once idle
        self._open_at_scrape = 0

    @property
    def load(self) -> float:
        """Streams on it: the other gateways' (as of the last scrape) plus this gateway's now."""
        others = 0.0
        if self.engine_streams is not None:
            others = max(0.0, self.engine_streams - self._open_at_scrape)
        return others + self.open

    @property
    def in_rotation(self) -> bool:
        return not self.retired and self.ready is not False and self.circuit_opened_at is None

    def holds(self, model: str) -> bool:
        return self.models is None or self.models.get(model, False)

    def scraped(self, streams: float | None) -> None:
        self.engine_streams = streams
        self._open_at_scrape = self.open

    def status(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "ready": bool(self.ready),
            "in_rotation": self.in_rotation and bool(self.ready),
            "circuit_open": self.circuit_opened_at is not None,
            "engine_streams": self.engine_streams,
            "open_streams": self.open,
            "models": dict(self.models) if self.models is not None else {},
        }


class BackendRouter:
    """A :class:`TTSEngine` over several backends (see the module docstring)."""

    def __init__(
        self,
        entries: Sequence[BackendEntry],
        engine_factory: Callable[[str], BackendEngine],
        *,
        refresh_s: float = 1.0,
        resolve_s: float = 10.0,
        cooldown_s: float = 5.0,
        resolver: Resolver = resolve,
        metrics_reader: MetricsReader | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not entries:
            raise ValueError("a router needs at least one backend")
        self._entries = list(entries)
        self._engine_factory = engine_factory
        self._refresh_s = refresh_s
        self._resolve_s = resolve_s
        self._cooldown_s = cooldown_s
        self._probe_timeout_s = min(max(2 * refresh_s, _PROBE_TIMEOUT_S[0]), _PROBE_TIMEOUT_S[1])
        self._resolver = resolver
        self._metrics_reader = metrics_reader
        self._http: httpx.AsyncClient | None = None
        self._rng = rng or random.Random()
        self._backends: dict[str, Backend] = {}
        self._resolved: dict[int, list[str]] = {}  # entry -> its addresses at the last resolution
        self._task: asyncio.Task[None] | None = None
        self._first_poll: asyncio.Event | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> BackendRouter:
        def engine(address: str) -> TritonEngine:
            return TritonEngine(
                address,
                settings.request_timeout_s,
                settings.gateway_triton_reconnect_max_s,
                stall_s=settings.gateway_stream_stall_s,
            )

        return cls(
            backend_entries(settings),
            engine,
            refresh_s=settings.gateway_backend_refresh_s,
            resolve_s=settings.gateway_backend_resolve_s,
            cooldown_s=settings.gateway_circuit_cooldown_s,
        )

    @property
    def backends(self) -> list[Backend]:
        return list(self._backends.values())

    def describe(self) -> str:
        return ", ".join(f"{entry.host}:{entry.port}" for entry in self._entries)

    # ------------------------------------------------------------------------------ background refresh

    async def start(self) -> None:
        """Start the background refresh and wait for its first round (every call after the first returns
        at once; the engine's other methods start it too)."""
        self._ensure_started()
        assert self._first_poll is not None
        await self._first_poll.wait()

    def _ensure_started(self) -> None:
        if self._task is None:
            self._first_poll = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="backend-refresh")

    async def _run(self) -> None:
        next_resolve = 0.0
        while True:
            try:
                if time.monotonic() >= next_resolve:
                    await self.resolve_backends()
                    next_resolve = time.monotonic() + self._resolve_s
                await self.refresh()
            except Exception:  # never let the refresh die: the next round tries again
                logger.exception("refreshing the backends failed")
            assert self._first_poll is not None
            self._first_poll.set()
            await asyncio.sleep(self._refresh_s)

    async def resolve_backends(self) -> None:
        """Resolve every entry; new addresses become backends, vanished ones retire (closed once idle)."""
        wanted: dict[str, str] = {}
        for index, entry in enumerate(self._entries):
            try:
                self._resolved[index] = await self._resolver(entry.host, entry.port)
            except OSError as exc:
                logger.warning("cannot resolve %s (%s); keeping its last addresses", entry.host, exc)
            for host in self._resolved.get(index) or [entry.host]:
                wanted.setdefault(join_host_port(host, entry.port), entry.metrics_url.replace("{host}", host))
        for address, metrics_url in wanted.items():
            backend = self._backends.get(address)
            if backend is None:
                logger.info("backend %s added (metrics %s)", address, metrics_url)
                self._backends[address] = Backend(address, self._engine_factory(address), metrics_url)
            elif backend.retired:
                backend.retired = False
        for address, backend in self._backends.items():
            if address not in wanted and not backend.retired:
                logger.info("backend %s is gone from DNS; it takes no new streams", address)
                backend.retired = True

    async def refresh(self) -> None:
        """One round: each backend's readiness, models and (when there is a choice) streams."""
        for address, backend in list(self._backends.items()):
            if backend.retired and backend.open == 0:
                del self._backends[address]
                await backend.engine.close()
        live = [backend for backend in self._backends.values() if not backend.retired]
        await asyncio.gather(*(self._probe(backend, scrape=len(live) > 1) for backend in live))

    async def _probe(self, backend: Backend, *, scrape: bool) -> None:
        timeout = self._probe_timeout_s
        try:
            ready = await asyncio.wait_for(backend.engine.ready(timeout, log=False), timeout + 1)
            models = (
                await asyncio.wait_for(backend.engine.model_states(timeout), timeout + 1) if ready else None
            )
        except asyncio.TimeoutError:
            ready, models = False, None
        if ready != backend.ready:
            log = logger.info if ready else logger.warning
            log("backend %s is %s", backend.address, "ready" if ready else "not ready")
        backend.ready = ready
        backend.models = models
        if ready and backend.circuit_opened_at is not None:
            if time.monotonic() - backend.circuit_opened_at >= self._cooldown_s:
                logger.info("backend %s is back in the rotation", backend.address)
                backend.circuit_opened_at = None
        backend.scraped(await self._scrape(backend) if ready and scrape else None)

    async def _scrape(self, backend: Backend) -> float | None:
        try:
            if self._metrics_reader is not None:
                text = await self._metrics_reader(backend.metrics_url)
            else:
                if self._http is None:
                    self._http = httpx.AsyncClient(trust_env=False)
                text = await read_metrics(backend.metrics_url, self._http, self._probe_timeout_s)
        except (httpx.HTTPError, OSError) as exc:
            logger.debug("no metrics from %s: %s", backend.metrics_url, exc)
            return None
        return engine_metrics.streams(text)

    # ---------------------------------------------------------------------------------------- routing

    def pick(self, model: str, tried: Sequence[Backend] = ()) -> Backend | None:
        """The least loaded backend in the rotation that holds ``model`` (a random one of equals)."""
        candidates = [
            backend
            for backend in self._backends.values()
            if backend not in tried and backend.in_rotation and backend.holds(model)
        ]
        if not candidates:
            return None
        least = min(backend.load for backend in candidates)
        return self._rng.choice([backend for backend in candidates if backend.load == least])

    def trip(self, backend: Backend, error: EngineError) -> bool:
        """Open ``backend``'s circuit when ``error`` says the backend is down; True when it did."""
        if error.kind not in BACKEND_DOWN:
            return False
        if backend.circuit_opened_at is None:
            logger.warning("backend %s leaves the rotation: %s", backend.address, error.message)
        backend.circuit_opened_at = time.monotonic()
        return True

    def _none_ready(self, model: str, last_error: EngineError | None) -> EngineError:
        if last_error is not None:
            return last_error
        error = EngineUnavailableError(f"no model server is ready for {model}; retry later")
        error.kind = ErrorKind.UNAVAILABLE
        return error

    def _retry_elsewhere(self, backend: Backend, error: EngineError) -> bool:
        if error.kind not in RETRY_ELSEWHERE:
            return False
        self.trip(backend, error)
        logger.warning(
            "backend %s failed before any audio (%s); trying another", backend.address, error.message
        )
        return True

    def _went_away(self, backend: Backend, error: EngineError) -> EngineError:
        """The error that ends a stream or session mid-way: a backend that died says so."""
        if not self.trip(backend, error):
            return error
        gone = EngineUnavailableError("the model server of this stream went away; retry")
        gone.kind = error.kind
        return gone

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        self._ensure_started()
        tried: list[Backend] = []
        last_error: EngineError | None = None
        while True:
            backend = self.pick(request.model, tried)
            if backend is None:
                raise self._none_ready(request.model, last_error)
            tried.append(backend)
            backend.open += 1
            source = backend.engine.stream(request)
            try:
                first = await anext(source)
                break
            except StopAsyncIteration:
                backend.open -= 1
                return
            except EngineError as error:
                backend.open -= 1
                await _aclose(source)
                if not self._retry_elsewhere(backend, error):
                    raise
                last_error = error
            except BaseException:
                backend.open -= 1
                await _aclose(source)
                raise
        try:
            yield first
            async for chunk in source:
                yield chunk
        except EngineError as error:
            raise self._went_away(backend, error) from None
        finally:
            backend.open -= 1
            await _aclose(source)

    async def open_session(self, request: SessionRequest) -> EngineSession:
        self._ensure_started()
        backend = self.pick(request.model)
        if backend is None:
            raise self._none_ready(request.model, None)
        backend.open += 1
        try:
            session = await backend.engine.open_session(request)
        except BaseException:
            backend.open -= 1
            raise
        return RoutedSession(session, backend, self)

    async def create_voice_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None, x_vector_only: bool
    ) -> VoicePrompt:
        self._ensure_started()
        tried: list[Backend] = []
        last_error: EngineError | None = None
        while (backend := self.pick(VOICE_PROMPT_MODEL, tried)) is not None:
            tried.append(backend)
            backend.open += 1
            try:
                return await backend.engine.create_voice_prompt(audio, sample_rate, ref_text, x_vector_only)
            except EngineError as error:
                if not self._retry_elsewhere(backend, error):
                    raise
                last_error = error
            finally:
                backend.open -= 1
        raise self._none_ready(VOICE_PROMPT_MODEL, last_error)

    # ------------------------------------------------------------------------------------- readiness

    async def _polled(self) -> list[Backend]:
        await self.start()
        return [backend for backend in self._backends.values() if backend.ready and backend.in_rotation]

    async def ready(self) -> bool:
        return bool(await self._polled())

    async def model_ready(self, name: str) -> bool:
        return any(backend.holds(name) for backend in await self._polled())

    async def served_models(self) -> tuple[str, ...]:
        """The models any ready backend holds (every model when none can say)."""
        names: set[str] = set()
        for backend in await self._polled():
            names.update(contract.MODELS if backend.models is None else backend.models)
        return tuple(name for name in contract.MODELS if name in names) or contract.MODELS

    async def backend_states(self) -> list[dict[str, Any]]:
        await self.start()
        return [backend.status() for backend in self._backends.values()]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for backend in self._backends.values():
            await backend.engine.close()
        self._backends.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class RoutedSession:
    """A session on one backend: counted there while open; a backend that dies mid-session opens its
    circuit and ends the session with :class:`EngineUnavailableError`."""

    def __init__(self, session: EngineSession, backend: Backend, router: BackendRouter) -> None:
        self.session_id = session.session_id
        self._session = session
        self._backend = backend
        self._router = router
        self._released = False

    async def send_text(self, text: str, *, flush: bool = False) -> None:
        await self._session.send_text(text, flush=flush)

    async def end(self, text: str = "") -> None:
        await self._session.end(text)

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioChunk]:
        try:
            async for chunk in self._session:
                yield chunk
        except EngineError as error:
            raise self._router._went_away(self._backend, error) from None
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._backend.open -= 1

    async def aclose(self) -> None:
        self._release()
        await self._session.aclose()


async def _aclose(source: AsyncIterator[AudioChunk]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()
