"""``Qwen3TTSProvider``: the facade an app's TTS router talks to.

Voice model ids route by prefix (:mod:`.routing`): ``qwen3-<timbre>`` → premium CustomVoice synthesis,
``qwen3-clone-<id>`` → the gateway's voice library. Every gateway call goes through a circuit breaker
(fail fast with :class:`CircuitOpenError` while the gateway is down) and is counted in
:class:`ProviderMetrics`. Errors are re-raised unchanged, so callers see the gateway's status/message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from .async_client import AsyncQwen3TTSClient
from .breaker import CircuitBreaker, CircuitState
from .errors import CircuitOpenError, Qwen3TTSError, ServiceUnavailableError
from .metrics import ProviderMetrics
from .routing import TIMBRES, VoiceRoute, clone_voice_id, premium_voice_id, route_voice
from .settings import ProviderSettings
from .types import AudioChunk, HealthStatus, SpeechResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .types import SamplingOptions

__all__ = ["LANGUAGES", "ProviderHealth", "Qwen3TTSProvider", "VoiceCatalog", "VoiceOption"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The gateway's GET /languages is authoritative; this list is the fallback while it is unreachable.
LANGUAGES: tuple[str, ...] = (
    "auto",
    "chinese",
    "english",
    "german",
    "italian",
    "portuguese",
    "spanish",
    "japanese",
    "korean",
    "french",
    "russian",
)


@dataclass(frozen=True)
class VoiceOption:
    voice_id: str  # what to pass back as ``voice_id``
    kind: Literal["premium", "clone"]
    name: str
    description: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class VoiceCatalog:
    voices: list[VoiceOption]
    languages: list[str]
    complete: bool = True  # False: the gateway was unreachable; built-in timbres only, no clones


@dataclass(frozen=True)
class ProviderHealth:
    available: bool
    status: Literal["healthy", "degraded", "unavailable"]
    circuit: str
    latency_s: float | None = None
    detail: str | None = None
    metrics: dict[str, object] = field(default_factory=dict, repr=False)


class Qwen3TTSProvider:
    """Async provider. ``clock`` drives the breaker's cooldown (inject a fake one in tests)."""

    name = "qwen3"

    def __init__(
        self,
        *,
        settings: ProviderSettings | None = None,
        client: AsyncQwen3TTSClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: ProviderMetrics | None = None,
    ) -> None:
        self.settings = settings or ProviderSettings()
        self._client = client or AsyncQwen3TTSClient(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key,
            timeout=self.settings.timeout_s,
            max_retries=self.settings.max_retries,
        )
        self._owns_client = client is None
        self.breaker = CircuitBreaker(
            failure_threshold=self.settings.failure_threshold,
            cooldown_s=self.settings.cooldown_s,
            clock=clock,
        )
        self.metrics = metrics or ProviderMetrics()

    # ------------------------------------------------------------------------------------ routing

    @staticmethod
    def supports(voice_id: str) -> bool:
        try:
            route_voice(voice_id)
        except ValueError:
            return False
        return True

    @staticmethod
    def route(voice_id: str) -> VoiceRoute:
        """Where ``voice_id`` goes; UnknownVoiceError (a ValueError) for foreign ids."""
        return route_voice(voice_id)

    @staticmethod
    def _gateway_voice(route: VoiceRoute) -> str:
        # The gateway's ``voice`` field takes a timbre name or "qwen3-clone-<id>" as it is.
        return clone_voice_id(route.target) if route.kind == "clone" else route.target

    @property
    def available(self) -> bool:
        return self.breaker.available

    # ------------------------------------------------------------------------------------ calls

    def _admit(self) -> float:
        """Fail fast while the circuit is open; else the start time for the latency metric."""
        try:
            self.breaker.before_call()
        except CircuitOpenError:
            self.metrics.record_rejected()
            raise
        return time.perf_counter()

    def _settle(self, operation: str, started: float, error: BaseException | None = None) -> None:
        """Tell the breaker and the metrics how a call admitted by ``_admit`` ended."""
        if error is None:
            self.breaker.record_success()
        elif isinstance(error, Qwen3TTSError):
            self.breaker.record_failure(error)
        else:
            # Cancelled, closed early, or a local bug before anything reached the gateway: no verdict.
            self.breaker.release_probe()
            return
        self.metrics.record(operation, time.perf_counter() - started, error)

    async def _guarded(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` through the breaker and the metrics; errors propagate unchanged."""
        started = self._admit()
        try:
            result = await call()
        except BaseException as error:
            self._settle(operation, started, error)
            raise
        self._settle(operation, started)
        return result

    async def synthesize(
        self,
        text: str,
        *,
        voice_id: str,
        language: str | None = None,
        instruct: str | None = None,
        response_format: str | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> SpeechResult:
        """The whole file for ``text`` in ``voice_id`` (``qwen3-<timbre>`` or ``qwen3-clone-<id>``)."""
        route = route_voice(voice_id)
        if route.kind == "clone" and instruct:
            raise ValueError("instruct (a style instruction) only applies to built-in timbres")
        return await self._guarded(
            f"synthesize_{route.kind}",
            lambda: self._client.speak(
                text,
                voice=self._gateway_voice(route),
                language=language or self.settings.default_language,
                instruct=instruct,
                response_format=response_format or self.settings.default_format,
                **sampling,
            ),
        )

    async def stream(
        self,
        text: str,
        *,
        voice_id: str,
        language: str | None = None,
        instruct: str | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> AsyncIterator[AudioChunk]:
        """Chunks as they arrive; the whole stream counts as one call for the breaker and metrics."""
        route = route_voice(voice_id)
        operation = f"stream_{route.kind}"
        started = self._admit()
        try:
            async with self._client.stream(
                text,
                voice=self._gateway_voice(route),
                language=language or self.settings.default_language,
                instruct=instruct,
                **sampling,
            ) as chunks:
                async for chunk in chunks:
                    yield chunk
        except BaseException as error:
            self._settle(operation, started, error)
            raise
        self._settle(operation, started)

    # ------------------------------------------------------------------------------------ catalog

    async def available_voices(self) -> VoiceCatalog:
        """Timbres and saved clones from the gateway; the built-in list when it cannot be reached."""
        try:
            speakers, voices, languages = await self._guarded("available_voices", self._fetch_catalog)
        except (Qwen3TTSError, CircuitOpenError) as error:
            logger.warning("voice catalog unavailable (%s); using the built-in timbres", error)
            fallback = [VoiceOption(premium_voice_id(t), "premium", t) for t in TIMBRES]
            return VoiceCatalog(fallback, list(LANGUAGES), complete=False)
        options = [
            VoiceOption(premium_voice_id(s.name), "premium", s.name, s.description, s.native_language)
            for s in speakers
        ]
        options += [VoiceOption(v.model_id, "clone", v.name or v.id, v.ref_text) for v in voices]
        return VoiceCatalog(options, [language.code for language in languages])

    async def _fetch_catalog(self) -> tuple[list, list, list]:
        return await asyncio.gather(
            self._client.speakers(), self._client.list_voices(), self._client.languages()
        )

    async def health_check(self) -> ProviderHealth:
        """Probe GET /ready (through the breaker: a half-open circuit uses it as its probe)."""
        started = time.perf_counter()
        try:
            await self._guarded("health_check", self._probe_ready)
        except Qwen3TTSError as error:
            return self._health(False, str(error), None)
        return self._health(True, None, time.perf_counter() - started)

    async def _probe_ready(self) -> HealthStatus:
        status = await self._client.ready()
        if not status.ok:
            # "Not ready" is an answer from the gateway, but it means synthesis would fail: count it.
            models = status.details.get("models")
            raise ServiceUnavailableError(f"the gateway is not ready (models: {models})", status_code=503)
        return status

    def _health(self, ok: bool, detail: str | None, latency: float | None) -> ProviderHealth:
        circuit = self.breaker.state
        if ok and circuit is CircuitState.CLOSED:
            status: Literal["healthy", "degraded", "unavailable"] = "healthy"
        elif ok or circuit is CircuitState.CLOSED:
            status = "degraded"  # answered but not ready, or a probe still has to prove itself
        else:
            status = "unavailable"
        return ProviderHealth(
            available=self.breaker.available and ok,
            status=status,
            circuit=circuit.value,
            latency_s=latency,
            detail=detail,
            metrics=self.metrics.snapshot(),
        )

    # ------------------------------------------------------------------------------------ cost

    def estimate_cost(self, *, text: str | None = None, seconds: float | None = None) -> float:
        """Price of ``text`` (per character) plus ``seconds`` of audio (per second), in ``currency``."""
        if text is None and seconds is None:
            raise ValueError("estimate_cost needs text=, seconds= or both")
        if seconds is not None and (seconds < 0 or seconds != seconds):
            raise ValueError("seconds must be a non-negative number")
        characters = len(text) if text else 0
        return (
            characters * self.settings.price_per_character + (seconds or 0.0) * self.settings.price_per_second
        )

    @property
    def currency(self) -> str:
        return self.settings.currency

    # ------------------------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Qwen3TTSProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
