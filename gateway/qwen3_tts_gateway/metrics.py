"""Prometheus metrics of one gateway app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_PREFIX = "qwen3_tts_gateway"
_TTFA_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{_PREFIX}_requests",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            f"{_PREFIX}_errors", "Errors by route and type.", ["route", "type"], registry=self.registry
        )
        self.latency = Histogram(
            f"{_PREFIX}_request_duration_seconds",
            "Time until the response is complete.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_audio = Histogram(
            f"{_PREFIX}_time_to_first_audio_seconds",
            "From sending to Triton to the first audio chunk.",
            ["route"],
            buckets=_TTFA_BUCKETS,
            registry=self.registry,
        )
        self.real_time_factor = Histogram(
            f"{_PREFIX}_real_time_factor",
            "Synthesis wall time divided by audio duration.",
            ["route"],
            buckets=_RTF_BUCKETS,
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            f"{_PREFIX}_audio_seconds", "Seconds of audio produced.", ["route"], registry=self.registry
        )
        self.active_streams = Gauge(
            f"{_PREFIX}_active_streams", "Synthesis streams open to Triton.", registry=self.registry
        )
        self.finish_reasons = Counter(
            f"{_PREFIX}_finish_reasons",
            "Finished syntheses and sessions by why they ended: stop, length, repetition (guard rails), "
            "idle_timeout, cancelled.",
            ["route", "reason"],
            registry=self.registry,
        )
        self.active_sessions = Gauge(
            f"{_PREFIX}_active_sessions", "Text-streaming sessions open to Triton.", registry=self.registry
        )
        self.session_text_chars = Counter(
            f"{_PREFIX}_session_text_characters",
            "Characters of text received by sessions.",
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
