"""Circuit breaker: scenarios, and random call sequences compared with a small reference model."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qwen3_tts_client import (
    APIConnectionError,
    BadRequestError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    InternalServerError,
    ServiceUnavailableError,
)


class FakeClock:
    """Injected time: tests move it by hand instead of sleeping through cooldowns."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


FAILURE = InternalServerError("boom", status_code=500)


def call(breaker: CircuitBreaker, error: Exception | None = None) -> None:
    breaker.before_call()
    if error is None:
        breaker.record_success()
    else:
        breaker.record_failure(error)


def test_opens_after_three_consecutive_failures_and_fails_fast() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    for _ in range(2):
        call(breaker, FAILURE)
        assert breaker.state is CircuitState.CLOSED and breaker.available
    call(breaker, FAILURE)
    assert breaker.state is CircuitState.OPEN and not breaker.available
    with pytest.raises(CircuitOpenError) as caught:
        breaker.before_call()
    assert isinstance(caught.value, ServiceUnavailableError)
    assert caught.value.status_code == 503
    assert caught.value.retry_after == pytest.approx(30.0)


def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    call(breaker, FAILURE)
    call(breaker, FAILURE)
    call(breaker)
    call(breaker, FAILURE)
    call(breaker, FAILURE)
    assert breaker.state is CircuitState.CLOSED


def test_half_open_after_cooldown_then_a_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30, clock=clock)
    call(breaker, APIConnectionError("refused"))
    call(breaker, APIConnectionError("refused"))
    clock.advance(29.9)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN and breaker.available
    breaker.before_call()  # the probe
    assert not breaker.available  # a second caller would fail fast while the probe is out
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    call(breaker, FAILURE)
    clock.advance(10)
    call(breaker, FAILURE)
    assert breaker.state is CircuitState.OPEN
    clock.advance(9)
    assert breaker.state is CircuitState.OPEN
    clock.advance(1)
    assert breaker.state is CircuitState.HALF_OPEN


def test_client_errors_do_not_trip_the_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock())
    for _ in range(5):
        call(breaker, BadRequestError("bad audio", status_code=400))
    assert breaker.state is CircuitState.CLOSED


def test_released_probe_lets_the_next_call_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1, clock=clock)
    call(breaker, FAILURE)
    clock.advance(1)
    breaker.before_call()
    breaker.release_probe()  # e.g. the caller was cancelled
    breaker.before_call()  # admitted again, no CircuitOpenError


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=-1)


# --------------------------------------------------------------------------------------- model-based


@dataclass
class ReferenceBreaker:
    """The specification, written as plainly as possible (sequential callers only)."""

    threshold: int
    cooldown: float
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0

    def call(self, now: float, outcome: str) -> str:
        """Returns "rejected" or "admitted"."""
        if self.state == "open":
            if now - self.opened_at < self.cooldown:
                return "rejected"
            self.state = "half_open"
        if outcome in ("ok", "client_error"):  # an answer from the gateway proves it is alive
            self.state, self.failures = "closed", 0
        else:
            self.failures += 1
            if self.state == "half_open" or self.failures >= self.threshold:
                self.state, self.opened_at = "open", now
        return "admitted"

    def observed_state(self, now: float) -> str:
        if self.state == "open" and now - self.opened_at >= self.cooldown:
            return "half_open"
        return self.state


OUTCOMES = {
    "ok": None,
    "server_error": InternalServerError("boom", status_code=500),
    "unavailable": ServiceUnavailableError("busy", status_code=503),
    "connection": APIConnectionError("refused"),
    "client_error": BadRequestError("bad", status_code=400),
}
steps = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.sampled_from(sorted(OUTCOMES))),
        st.tuples(st.just("wait"), st.floats(0, 40, allow_nan=False)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(1, 5), st.sampled_from([0.0, 1.0, 5.0, 30.0]))
def test_breaker_matches_the_reference_model(
    script: list[tuple[str, object]], threshold: int, cooldown: float
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown, clock=clock)
    model = ReferenceBreaker(threshold, cooldown)
    for kind, value in script:
        if kind == "wait":
            clock.advance(float(value))  # type: ignore[arg-type]
        else:
            expected = model.call(clock.now, str(value))
            try:
                breaker.before_call()
            except CircuitOpenError:
                assert expected == "rejected"
            else:
                assert expected == "admitted"
                error = OUTCOMES[str(value)]
                if error is None:
                    breaker.record_success()
                else:
                    breaker.record_failure(error)
        assert breaker.state.value == model.observed_state(clock.now)
        assert breaker.available == (model.observed_state(clock.now) != "open")
