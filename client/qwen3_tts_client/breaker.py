"""A circuit breaker so that a dead gateway costs callers nothing but an exception.

closed ──N consecutive failures──▶ open ──cooldown elapsed──▶ half-open ──probe ok──▶ closed
                                     ▲                            │
                                     └──────── probe failed ──────┘

While open every call fails fast with :class:`CircuitOpenError`. Half-open lets exactly one probe
through at a time (concurrent callers keep failing fast, so a recovering gateway is not stampeded);
its outcome closes or re-opens the circuit. Only failures that say "the service is unwell" count
(connection errors, 408, 429, 5xx — :func:`is_retryable_error`); a 4xx about the caller's own request
counts as a success, since the gateway evidently answered.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from .errors import CircuitOpenError
from .retry import is_retryable_error

__all__ = ["CircuitBreaker", "CircuitState"]

logger = logging.getLogger(__name__)


class CircuitState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Not thread-safe by design: one breaker per event loop (the provider is async)."""

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "qwen3-tts",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.name = name
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        """The current state; an open circuit whose cooldown has elapsed reads as half-open."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def available(self) -> bool:
        """False while calls would fail fast (open, or half-open with its probe already out)."""
        state = self.state
        return state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN and not self._probe_in_flight)

    def retry_after(self) -> float:
        """Seconds until the next probe is allowed (0 when not open)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def before_call(self) -> None:
        """Raise CircuitOpenError to fail fast, or admit the call (as the probe when half-open)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._state = CircuitState.HALF_OPEN
            self._probe_in_flight = True
            logger.info("circuit %s half-open: probing", self.name)
            return
        wait = self.retry_after()
        raise CircuitOpenError(
            f"circuit breaker open after {self._failures} consecutive failures; "
            f"not calling the gateway for another {wait:.1f}s",
            retry_after=wait,
        )

    def record_success(self) -> None:
        if self._state is not CircuitState.CLOSED:
            logger.info("circuit %s closed", self.name)
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self, error: BaseException | None = None) -> None:
        """Count a failure. An error that is the caller's fault (most 4xx) proves the gateway is up."""
        if error is not None and not is_retryable_error(error):
            self.record_success()
            return
        self._probe_in_flight = False
        self._failures += 1
        # Re-arm the timer only on a transition: late failures of calls admitted before the circuit
        # opened must not keep pushing the next probe back.
        if self._state is CircuitState.HALF_OPEN or (
            self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold
        ):
            logger.warning("circuit %s open after %d consecutive failures", self.name, self._failures)
            self._state = CircuitState.OPEN
            self._opened_at = self._clock()

    def release_probe(self) -> None:
        """A call admitted as probe ended without a verdict (cancelled): let the next call probe."""
        self._probe_in_flight = False
