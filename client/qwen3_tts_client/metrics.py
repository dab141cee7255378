"""In-process request metrics for the provider: counters and a latency histogram, no dependencies.

Apps that already export Prometheus metrics can read :meth:`ProviderMetrics.snapshot` and re-export;
keeping this dependency-free means the client never forces a metrics stack on its users.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_LATENCY_BUCKETS", "LatencyHistogram", "ProviderMetrics"]

# Seconds; spans a cached short phrase (tens of ms) to a long paragraph on a busy GPU.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class LatencyHistogram:
    """Cumulative-style buckets like Prometheus: ``counts[i]`` is observations <= ``buckets[i]``."""

    buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    _counts: list[int] = field(init=False)
    count: int = field(default=0, init=False)
    total: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError("buckets must be strictly increasing")
        self._counts = [0] * (len(self.buckets) + 1)  # the last slot is +Inf

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> dict[str, int]:
        """``{"le_0.05": n, ..., "le_inf": count}``: observations at or below each bound."""
        result, running = {}, 0
        for bound, n in zip([*self.buckets, float("inf")], self._counts, strict=True):
            running += n
            result[f"le_{bound:g}"] = running
        return result

    def quantile(self, q: float) -> float | None:
        """Upper bucket bound holding the q-quantile (coarse, like Prometheus' histogram_quantile)."""
        if not 0 <= q <= 1:
            raise ValueError("q must be in [0, 1]")
        if self.count == 0:
            return None
        rank, running = q * self.count, 0
        for bound, n in zip([*self.buckets, float("inf")], self._counts, strict=True):
            running += n
            if running >= rank and running > 0:
                return bound
        return float("inf")

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class ProviderMetrics:
    """Requests, failures (by error class) and latency, per operation and in total. Thread-safe."""

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._buckets = buckets
        self.requests: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.failures_by_error: Counter[str] = Counter()
        self.rejected = 0  # failed fast by the open circuit, never sent
        self.latency = LatencyHistogram(buckets)
        self.latency_by_operation: dict[str, LatencyHistogram] = {}

    def record(self, operation: str, seconds: float, error: BaseException | None = None) -> None:
        with self._lock:
            self.requests[operation] += 1
            self.latency.observe(seconds)
            self.latency_by_operation.setdefault(operation, LatencyHistogram(self._buckets)).observe(seconds)
            if error is not None:
                self.failures[operation] += 1
                self.failures_by_error[type(error).__name__] += 1

    def record_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_failures(self) -> int:
        return sum(self.failures.values())

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to serialise as JSON."""
        with self._lock:
            return {
                "requests": self.total_requests,
                "failures": self.total_failures,
                "rejected": self.rejected,
                "requests_by_operation": dict(self.requests),
                "failures_by_operation": dict(self.failures),
                "failures_by_error": dict(self.failures_by_error),
                "latency_seconds": {
                    "count": self.latency.count,
                    "sum": self.latency.total,
                    "mean": self.latency.mean,
                    "p50": self.latency.quantile(0.5),
                    "p95": self.latency.quantile(0.95),
                    "buckets": self.latency.cumulative(),
                },
            }
