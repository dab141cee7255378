"""Retry policy shared by the sync and async clients.

Only answers that may succeed when asked again are retried: 408, 429, every 5xx, and failures to get
an answer at all (connection refused/reset, timeouts). A 4xx other than 408/429 is the caller's
mistake and is raised at once. The wait before retry ``n`` (0-based) is ``base * 2**n`` capped at
``max_backoff``, with full-range jitter of ``jitter`` (a fraction) so that many clients rejected
together do not come back together; a ``Retry-After`` header from the server wins over the computed
backoff (capped at ``max_retry_after`` so a bogus header cannot park the caller for an hour).

A call that is not idempotent (``POST /voices`` stores a voice) is sent again only when it cannot have
been carried out: the connection was never made, or the answer refused it (408, 429, 503). After a read
timeout or a 500 the voice may be stored already, and a second attempt would store it twice.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timezone

from .errors import APIConnectionError, Qwen3TTSError

__all__ = [
    "REFUSED_STATUSES",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "RetryState",
    "header_value",
    "is_retryable_error",
    "is_retryable_status",
    "is_safe_to_resend",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

# 5xx is handled by range; these are the 4xx that mean "not now" rather than "not like this".
RETRYABLE_STATUSES = frozenset({408, 429})
# Retry-After's delta-seconds (RFC 9110 10.2.3: digits; a fraction is taken too); any other value that
# starts like a number is malformed, not a date.
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_NUMBER_START = re.compile(r"[+-]?[0-9.]")
# The answers that say the request was not carried out at all (timed out waiting for it, rate limited,
# not served now): the only statuses after which a non-idempotent call is sent again.
REFUSED_STATUSES = frozenset({408, 429, 503})


def is_retryable_status(status_code: int) -> bool:
    return status_code in RETRYABLE_STATUSES or 500 <= status_code <= 599


def is_retryable_error(error: BaseException) -> bool:
    """True for errors a later attempt might not hit (also what the circuit breaker counts)."""
    if isinstance(error, APIConnectionError):
        return True
    if isinstance(error, Qwen3TTSError) and error.status_code is not None:
        return is_retryable_status(error.status_code)
    return False


def is_safe_to_resend(error: BaseException) -> bool:
    """True when the failed request cannot have been carried out, so even a non-idempotent one may be
    sent again: it never reached the server, or the server refused it."""
    if isinstance(error, APIConnectionError):
        return not error.request_sent
    return isinstance(error, Qwen3TTSError) and error.status_code in REFUSED_STATUSES


def header_value(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup for plain dicts as well as httpx.Headers."""
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/bad.

    Delta-seconds are digits (a fraction is taken too), as in the TypeScript client: "-1", "inf", "1e3"
    or "nan" are no delay at all, so the backoff applies (a negative one must not mean "retry at once").
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    if not value or _NUMBER_START.match(value):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # "-0000" gives a naive datetime, which timestamp() would read as local time; an HTTP date
        # is always GMT (RFC 9110 5.6.7).
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now())


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait; ``rng`` is injectable so tests can pin the jitter."""

    max_retries: int = 2
    backoff_base: float = 0.5
    max_backoff: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_base < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff times must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction in [0, 1]")

    def backoff(self, retry_index: int) -> float:
        """The computed wait before retry ``retry_index`` (0-based), jitter included."""
        delay = min(self.max_backoff, self.backoff_base * (2**retry_index))
        if self.jitter:
            delay *= 1 - self.jitter + 2 * self.jitter * self.rng.random()
        return max(0.0, delay)

    def should_retry(self, error: BaseException, retry_index: int) -> bool:
        return retry_index < self.max_retries and is_retryable_error(error)

    def delay(self, retry_index: int, retry_after: float | None = None) -> float:
        """Wait before retry ``retry_index``: the server's Retry-After when given, else the backoff."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_retry_after)
        return self.backoff(retry_index)


class RetryState:
    """The retries of one call. Both clients drive it the same way::

    state = RetryState(policy)
    while True:
        try:
            return send_once()
        except Qwen3TTSError as error:
            sleep(state.next_delay(error))   # re-raises when the error is final
    """

    def __init__(self, policy: RetryPolicy, *, idempotent: bool = True) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.retries = 0

    def next_delay(self, error: Qwen3TTSError) -> float:
        if not self.policy.should_retry(error, self.retries):
            raise error
        if not self.idempotent and not is_safe_to_resend(error):
            raise error
        delay = self.policy.delay(self.retries, error.retry_after)
        self.retries += 1
        logger.info(
            "request failed (%s); retry %d/%d in %.2fs", error, self.retries, self.policy.max_retries, delay
        )
        return delay
