"""Retry policy: the pure parts, then the sync and async clients against a real local HTTP server."""

from __future__ import annotations

import email.utils
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qwen3_tts_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncQwen3TTSClient,
    BadRequestError,
    InternalServerError,
    Qwen3TTSClient,
    RateLimitError,
    RetryPolicy,
    ServiceUnavailableError,
)
from qwen3_tts_client.retry import RetryState, is_retryable_status, parse_retry_after

from .servers import Reply, ScriptedServer, error_reply, refused_url

# --------------------------------------------------------------------------------------- pure policy


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 413, 422, 499])
def test_final_statuses(status: int) -> None:
    assert not is_retryable_status(status)


def test_parse_retry_after_seconds_and_garbage() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize("value", ["-4", "-0.5", "+3", "inf", "Infinity", "1e3", "nan", ".5", "2 s", "May 1"])
def test_parse_retry_after_malformed_is_no_delay(value: str) -> None:
    # As in the TypeScript client: the backoff applies; a negative value must not mean "retry at once".
    assert parse_retry_after(value) is None


def test_parse_retry_after_every_http_date_form() -> None:
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    for header in (
        "Wed, 21 Oct 2015 07:28:30 GMT",
        "Wednesday, 21-Oct-15 07:28:30 GMT",
        "Wed Oct 21 07:28:30 2015",
    ):
        assert parse_retry_after(header, now=lambda: now) == pytest.approx(30.0), header


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=lambda: now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=lambda: now) == 0.0


def test_parse_retry_after_minus_zero_date_is_gmt(monkeypatch: pytest.MonkeyPatch) -> None:
    # parsedate_to_datetime gives a naive datetime for "-0000"; in a zone far from UTC, reading it as
    # local time would be off by hours.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        now = 1_700_000_000.0
        header = email.utils.formatdate(now + 30)  # "Tue, 14 Nov 2023 22:13:50 -0000"
        assert header.endswith("-0000")
        assert parse_retry_after(header, now=lambda: now) == pytest.approx(30.0)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=0.5, max_backoff=3.0, jitter=0.0)
    assert [policy.backoff(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 20), st.floats(0, 1), st.integers(0, 2**32))
def test_jitter_stays_within_its_band(retry_index: int, jitter: float, seed: int) -> None:
    policy = RetryPolicy(backoff_base=0.25, max_backoff=4.0, jitter=jitter, rng=random.Random(seed))
    base = min(4.0, 0.25 * 2**retry_index)
    assert base * (1 - jitter) - 1e-9 <= policy.backoff(retry_index) <= base * (1 + jitter) + 1e-9


def test_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(jitter=0.0, max_retry_after=10.0)
    assert policy.delay(0, 7.0) == 7.0
    assert policy.delay(0, 3600.0) == 10.0
    assert policy.delay(1, None) == 1.0


def test_retry_state_counts_and_reraises() -> None:
    state = RetryState(RetryPolicy(max_retries=2, jitter=0.0, backoff_base=0.1))
    error = ServiceUnavailableError("busy", status_code=503)
    assert state.next_delay(error) == 0.1
    assert state.next_delay(error) == 0.2
    with pytest.raises(ServiceUnavailableError):
        state.next_delay(error)


def test_retry_state_never_retries_a_client_error() -> None:
    with pytest.raises(BadRequestError):
        RetryState(RetryPolicy(max_retries=5)).next_delay(BadRequestError("bad", status_code=400))


@pytest.mark.parametrize(
    ("error", "resent"),
    [
        (ServiceUnavailableError("busy", status_code=503), True),
        (RateLimitError("slow down", status_code=429), True),
        (InternalServerError("failed", status_code=500), False),
        (InternalServerError("bad gateway", status_code=502), False),
        (APITimeoutError("read timeout"), False),
        (APIConnectionError("reset"), False),
    ],
)
def test_a_non_idempotent_call_is_resent_only_when_it_was_not_carried_out(
    error: APIConnectionError, resent: bool
) -> None:
    state = RetryState(RetryPolicy(max_retries=2, jitter=0.0), idempotent=False)
    if resent:
        assert state.next_delay(error) >= 0
    else:
        with pytest.raises(type(error)):
            state.next_delay(error)
    assert RetryState(RetryPolicy(max_retries=2)).next_delay(error) >= 0  # an idempotent call: always


def test_a_voice_is_created_again_only_when_the_gateway_refused_it(
    scripted: ScriptedServer, fast_retry: RetryPolicy
) -> None:
    voice = {"id": "0123456789abcdef"}
    scripted.script(error_reply(503, "busy"), Reply(201, voice))
    with client_for(scripted, fast_retry) as client:
        assert client.create_voice(b"RIFF").id == voice["id"]
    scripted.script(error_reply(500, "failed after storing?"), Reply(201, voice))
    with client_for(scripted, fast_retry) as client, pytest.raises(InternalServerError):
        client.create_voice(b"RIFF")
    assert len(scripted.requests) == 3


def test_invalid_policies() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)


@pytest.mark.parametrize("client_class", [Qwen3TTSClient, AsyncQwen3TTSClient])
@pytest.mark.parametrize("max_retries", [0, 2, 5])
def test_retry_policy_and_max_retries_together_are_refused(
    client_class: type[Qwen3TTSClient] | type[AsyncQwen3TTSClient], max_retries: int, fast_retry: RetryPolicy
) -> None:
    # Before, the policy silently won and max_retries was dropped; even a count equal to the policy's is
    # refused, so the rule does not depend on the numbers.
    with pytest.raises(ValueError, match=r"give either retry_policy or max_retries, not both"):
        client_class(base_url="http://127.0.0.1:9", retry_policy=fast_retry, max_retries=max_retries)


# --------------------------------------------------------------------------------------- real HTTP, sync


def client_for(server: ScriptedServer, policy: RetryPolicy, **kwargs: object) -> Qwen3TTSClient:
    return Qwen3TTSClient(base_url=server.url, retry_policy=policy, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_status_then_success(
    scripted: ScriptedServer, fast_retry: RetryPolicy, status: int
) -> None:
    scripted.script(
        error_reply(status, "try again"), Reply(200, {"languages": [{"code": "auto", "name": "Auto"}]})
    )
    with client_for(scripted, fast_retry) as client:
        assert [language.code for language in client.languages()] == ["auto"]
    assert len(scripted.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_not_retried(
    scripted: ScriptedServer, fast_retry: RetryPolicy, status: int
) -> None:
    scripted.script(error_reply(status, "no"))
    with client_for(scripted, fast_retry) as client, pytest.raises(Exception) as caught:
        client.speakers()
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    assert len(scripted.requests) == 1


def test_gives_up_after_max_retries(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    scripted.script(*[error_reply(500, f"boom {i}") for i in range(5)])
    with client_for(scripted, fast_retry) as client, pytest.raises(InternalServerError) as caught:
        client.speakers()
    assert len(scripted.requests) == 3  # the first try and max_retries=2 retries
    assert caught.value.message == "boom 2"  # the last answer is the one reported


def test_max_retries_zero_means_one_attempt(scripted: ScriptedServer) -> None:
    scripted.script(error_reply(503, "busy"), Reply(200, {"speakers": []}))
    with (
        Qwen3TTSClient(base_url=scripted.url, max_retries=0) as client,
        pytest.raises(ServiceUnavailableError),
    ):
        client.speakers()
    assert len(scripted.requests) == 1


def test_default_is_two_retries_and_an_unset_max_retries_keeps_the_policys_count(
    scripted: ScriptedServer, fast_retry: RetryPolicy
) -> None:
    scripted.script(*[error_reply(503, f"busy {i}") for i in range(3)])  # then the default 200
    with Qwen3TTSClient(base_url=scripted.url) as client, pytest.raises(ServiceUnavailableError):
        client.speakers()  # the default backoff: about 1.5 s in all
    assert len(scripted.requests) == 3
    scripted.script(*[error_reply(503, f"busy {i}") for i in range(2)])
    one_retry = RetryPolicy(max_retries=1, backoff_base=0.001, max_backoff=0.01)
    with (
        Qwen3TTSClient(base_url=scripted.url, retry_policy=one_retry, max_retries=None) as client,
        pytest.raises(ServiceUnavailableError),
    ):
        client.speakers()
    assert len(scripted.requests) == 3 + 2


def test_retry_after_seconds_is_honoured(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    scripted.script(error_reply(429, "slow down", **{"Retry-After": "1"}), Reply(200, {"speakers": []}))
    with client_for(scripted, fast_retry) as client:
        client.speakers()
    first, second = scripted.requests
    assert second.at - first.at >= 0.95  # the backoff alone would have been ~1 ms


def test_retry_after_http_date_is_honoured(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    # HTTP dates have 1 s resolution: 2 s ahead means a wait of (1, 2] s.
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    scripted.script(error_reply(503, "busy", **{"Retry-After": when}), Reply(200, {"speakers": []}))
    with client_for(scripted, fast_retry) as client:
        client.speakers()
    first, second = scripted.requests
    assert 0.9 <= second.at - first.at <= 3.0


def test_exhausted_rate_limit_reports_retry_after(scripted: ScriptedServer) -> None:
    scripted.script(error_reply(429, "quota", **{"Retry-After": "0"}))
    with (
        Qwen3TTSClient(base_url=scripted.url, max_retries=0) as client,
        pytest.raises(RateLimitError) as caught,
    ):
        client.speakers()
    assert caught.value.retry_after == 0.0


def test_a_negative_retry_after_gets_the_backoff_not_an_instant_retry(scripted: ScriptedServer) -> None:
    scripted.script(error_reply(503, "busy", **{"Retry-After": "-1"}), Reply(200, {"languages": []}))
    policy = RetryPolicy(max_retries=1, backoff_base=0.2, jitter=0.0)
    with Qwen3TTSClient(base_url=scripted.url, retry_policy=policy) as client:
        assert client.languages() == []
    first, second = scripted.requests
    assert second.at - first.at >= 0.2


def test_connection_refused_is_retried_then_raised(fast_retry: RetryPolicy) -> None:
    started = time.monotonic()
    with Qwen3TTSClient(base_url=refused_url(), retry_policy=fast_retry) as client:
        with pytest.raises(APIConnectionError) as caught:
            client.speakers()
    assert caught.value.status_code is None and not caught.value.request_sent
    assert "could not reach the gateway" in caught.value.message
    assert time.monotonic() - started < 5


def test_read_timeout_is_a_retryable_connection_error(
    scripted: ScriptedServer, fast_retry: RetryPolicy
) -> None:
    # Generous numbers: the second (instant) answer must beat the timeout even on a loaded machine.
    scripted.script(Reply(200, {"speakers": []}, delay_s=2.5), Reply(200, {"speakers": [{"name": "vivian"}]}))
    with client_for(scripted, fast_retry, timeout=1.0) as client:
        speakers = client.speakers()
    assert [s.name for s in speakers] == ["vivian"]
    assert len(scripted.requests) == 2


def test_timeout_without_retries_raises_api_timeout(scripted: ScriptedServer) -> None:
    scripted.script(Reply(200, {"speakers": []}, delay_s=1.0))
    with Qwen3TTSClient(base_url=scripted.url, timeout=0.2, max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            client.speakers()


def test_health_probes_are_not_retried(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    scripted.script(Reply(503, {"ready": False, "server": False, "models": {}}, {"Retry-After": "5"}))
    with client_for(scripted, fast_retry) as client:
        status = client.ready()
    assert not status.ok and status.status == "not ready"
    assert len(scripted.requests) == 1


# --------------------------------------------------------------------------------------- real HTTP, async


async def test_async_retries_then_succeeds(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    scripted.script(error_reply(503, "busy"), error_reply(502, "bad gateway"), Reply(200, {"speakers": []}))
    async with AsyncQwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client:
        assert await client.speakers() == []
    assert len(scripted.requests) == 3


async def test_async_honours_retry_after(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    scripted.script(error_reply(503, "busy", **{"Retry-After": "1"}), Reply(200, {"speakers": []}))
    async with AsyncQwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client:
        await client.speakers()
    first, second = scripted.requests
    assert second.at - first.at >= 0.95


async def test_async_does_not_retry_422(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    scripted.script(error_reply(422, "unknown speaker 'x'; valid speakers: vivian, ryan"))
    async with AsyncQwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client:
        with pytest.raises(Exception) as caught:
            await client.speak("hi", voice="x")
    assert caught.value.status_code == 422  # type: ignore[attr-defined]
    assert len(scripted.requests) == 1


async def test_async_connection_refused(fast_retry: RetryPolicy) -> None:
    async with AsyncQwen3TTSClient(base_url=refused_url(), retry_policy=fast_retry) as client:
        with pytest.raises(APIConnectionError):
            await client.health()
