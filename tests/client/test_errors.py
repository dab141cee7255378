"""Error mapping: status → class, body → message, over real HTTP and inside streams."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qwen3_tts_client import (
    APIConnectionError,
    APIStatusError,
    AsyncQwen3TTSClient,
    AuthenticationError,
    BadGatewayError,
    BadRequestError,
    GatewayTimeoutError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    Qwen3TTSClient,
    Qwen3TTSError,
    RateLimitError,
    RequestInfo,
    RequestTimeoutError,
    RetryPolicy,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
)
from qwen3_tts_client.errors import error_for_status, error_from_response, message_from_body

from .servers import Reply, ScriptedServer, error_reply, ndjson_reply, refused_url

EXPECTED = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    500: InternalServerError,
    502: BadGatewayError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}


@pytest.mark.parametrize(("status", "cls"), sorted(EXPECTED.items()))
def test_status_classes(status: int, cls: type[Exception]) -> None:
    assert error_for_status(status) is cls


def test_unknown_statuses() -> None:
    assert error_for_status(501) is InternalServerError
    assert issubclass(BadGatewayError, InternalServerError)  # an `except InternalServerError` still takes 502
    assert error_for_status(409) is APIStatusError
    assert issubclass(APIStatusError, Qwen3TTSError)
    assert not issubclass(APIConnectionError, APIStatusError)


def test_message_from_gateway_body() -> None:
    body = json.dumps(
        {"error": {"status": 422, "type": "invalid_request_error", "message": "unknown speaker"}}
    )
    assert message_from_body(body, "fallback")[0] == "unknown speaker"


def test_message_from_fastapi_validation_list() -> None:
    body = json.dumps({"detail": [{"loc": ["body", "speaker"], "msg": "bad speaker", "type": "value_error"}]})
    message, detail = message_from_body(body, "fallback")
    assert message == "speaker: bad speaker"
    assert isinstance(detail, list)


def test_message_from_plain_detail_text_and_empty() -> None:
    assert message_from_body('{"detail": "nope"}', "x")[0] == "nope"
    assert message_from_body("<html>Bad Gateway</html>", "x")[0] == "<html>Bad Gateway</html>"
    assert message_from_body(b"", "Service Unavailable")[0] == "Service Unavailable"
    assert message_from_body("null", "fallback")[0] == "fallback"


def test_error_str_and_repr() -> None:
    error = error_from_response(503, '{"detail": "busy"}', retry_after=2.0)
    assert str(error) == "503: busy"
    assert "ServiceUnavailableError" in repr(error)
    assert error.retry_after == 2.0


# --------------------------------------------------------------------------------------- real HTTP

_messages = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60).filter(str.strip)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.integers(400, 599), message=_messages)
def test_failed_request_keeps_status_and_message(scripted: ScriptedServer, status: int, message: str) -> None:
    scripted.replies.clear()
    scripted.script(error_reply(status, message))
    with (
        Qwen3TTSClient(base_url=scripted.url, max_retries=0) as client,
        pytest.raises(Qwen3TTSError) as caught,
    ):
        client.speakers()
    error = caught.value
    assert error.status_code == status
    assert error.message == message
    assert isinstance(error, error_for_status(status))


# Every status the gateway answers (gateway/README.md, "Errors"; 408/429 from a proxy in front of it): its
# class, the server's message and Retry-After kept, retried (3 attempts with 2 retries) only if 408/429/5xx.
RETRIED = {408, 429, 500, 502, 503, 504}


@pytest.mark.parametrize(("status", "cls"), sorted(EXPECTED.items()))
def test_each_gateway_status_over_http(
    scripted: ScriptedServer, fast_retry: RetryPolicy, status: int, cls: type[Qwen3TTSError]
) -> None:
    scripted.script(*[error_reply(status, f"refused with {status}", **{"Retry-After": "0"})] * 3)
    with (
        Qwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client,
        pytest.raises(cls) as caught,
    ):
        client.speakers()
    assert type(caught.value) is cls
    assert (caught.value.status_code, caught.value.message) == (status, f"refused with {status}")
    assert caught.value.retry_after == 0.0
    assert len(scripted.requests) == (3 if status in RETRIED else 1)
    attempt = 2 if status in RETRIED else 0
    assert caught.value.request == RequestInfo("speakers", "GET", f"{scripted.url}/speakers", attempt)


@pytest.mark.parametrize(("status", "cls"), sorted(EXPECTED.items()))
async def test_each_gateway_status_over_http_async(
    scripted: ScriptedServer, fast_retry: RetryPolicy, status: int, cls: type[Qwen3TTSError]
) -> None:
    scripted.script(*[error_reply(status, f"refused with {status}")] * 3)
    async with AsyncQwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client:
        with pytest.raises(cls) as caught:
            await client.speakers()
    assert type(caught.value) is cls
    assert (caught.value.status_code, caught.value.message) == (status, f"refused with {status}")
    assert len(scripted.requests) == (3 if status in RETRIED else 1)
    assert caught.value.request is not None and caught.value.request.operation == "speakers"


def test_no_answer_names_the_call_too(fast_retry: RetryPolicy) -> None:
    url = refused_url()
    with (
        Qwen3TTSClient(base_url=url, retry_policy=fast_retry) as client,
        pytest.raises(APIConnectionError) as caught,
    ):
        client.create_voice(b"RIFF....", ref_text="hi")
    assert caught.value.request == RequestInfo("create_voice", "POST", f"{url}/voices", 2)


def test_fastapi_style_detail_over_http(scripted: ScriptedServer) -> None:
    scripted.script(Reply(404, {"detail": "voice not found"}))
    with Qwen3TTSClient(base_url=scripted.url) as client, pytest.raises(NotFoundError) as caught:
        client.get_voice("0123456789abcdef")
    assert caught.value.message == "voice not found"
    assert scripted.requests[0].path == "/voices/0123456789abcdef"


def test_error_line_inside_a_stream(scripted: ScriptedServer) -> None:
    import numpy as np

    good = ndjson_reply([np.zeros(240, np.float32)], last=False)
    error_line = json.dumps(
        {"error": {"status": 504, "type": "timeout", "message": "synthesis did not finish"}}
    )
    scripted.script(Reply(200, good.body + error_line.encode() + b"\n", good.headers))
    with Qwen3TTSClient(base_url=scripted.url) as client:
        chunks = client.stream("hello", voice="vivian")
        first = next(chunks)
        assert first.sequence == 0
        with pytest.raises(GatewayTimeoutError) as caught:
            next(chunks)
    assert caught.value.message == "synthesis did not finish"
    assert caught.value.request == RequestInfo("stream", "POST", f"{scripted.url}/synthesize/stream", 0)


def test_truncated_stream_is_a_connection_error(scripted: ScriptedServer) -> None:
    import numpy as np

    scripted.script(ndjson_reply([np.zeros(240, np.float32)] * 2, last=False))
    with (
        Qwen3TTSClient(base_url=scripted.url) as client,
        pytest.raises(APIConnectionError, match="without the last") as caught,
    ):
        list(client.stream("hello", voice="vivian"))
    assert caught.value.request is not None and caught.value.request.operation == "stream"


async def test_async_client_maps_the_same(scripted: ScriptedServer) -> None:
    scripted.script(error_reply(413, "reference audio exceeds 20971520 bytes"))
    async with AsyncQwen3TTSClient(base_url=scripted.url) as client:
        with pytest.raises(PayloadTooLargeError) as caught:
            await client.create_voice(b"RIFF....", ref_text="hi")
    assert caught.value.message == "reference audio exceeds 20971520 bytes"


# A streamed request reads its error body only after the status: a connection dropped mid-body must
# still raise the status's error (never a raw httpx error), with what could be read of the message.


@pytest.mark.parametrize(("cut_at", "message"), [(60, '{"error": '), (0, "Service Unavailable")])
def test_stream_error_body_cut_short_keeps_the_status(
    scripted: ScriptedServer, cut_at: int, message: str
) -> None:
    scripted.script(replace(error_reply(503, "engine busy, try again"), cut_body_at=cut_at))
    with (
        Qwen3TTSClient(base_url=scripted.url, max_retries=0) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        list(client.stream("hello", voice="vivian"))
    assert caught.value.status_code == 503
    assert caught.value.message.startswith(message)
    assert caught.value.message.endswith("(the connection dropped while the error was read)")


async def test_async_stream_error_body_cut_short_keeps_the_status(scripted: ScriptedServer) -> None:
    scripted.script(replace(error_reply(503, "engine busy, try again"), cut_body_at=60))
    async with AsyncQwen3TTSClient(base_url=scripted.url, max_retries=0) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            async for _chunk in client.stream("hello", voice="vivian"):
                pass
    assert caught.value.message.startswith('{"error": ')


def test_stream_error_body_cut_short_is_retried(scripted: ScriptedServer, fast_retry: RetryPolicy) -> None:
    import numpy as np

    scripted.script(
        replace(error_reply(503, "engine busy"), cut_body_at=10), ndjson_reply([np.zeros(240, np.float32)])
    )
    with Qwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client:
        assert [chunk.is_last for chunk in client.stream("hello", voice="vivian")] == [True]
    assert len(scripted.requests) == 2


# A session's WebSocket handshake refused with an HTTP status (the draining gateway's 503, a proxy's 429):
# the status's error, the server's message, its headers and Retry-After, as for any HTTP call.


@pytest.mark.parametrize(("status", "cls"), [(503, ServiceUnavailableError), (429, RateLimitError)])
def test_session_handshake_refused_keeps_status_message_and_retry_after(
    scripted: ScriptedServer, status: int, cls: type[Qwen3TTSError]
) -> None:
    scripted.script(error_reply(status, "the gateway is shutting down; retry", **{"Retry-After": "7"}))
    with Qwen3TTSClient(base_url=scripted.url) as client, pytest.raises(cls) as caught:
        with client.session(voice="ryan"):
            pass
    assert scripted.requests[0].path == "/ws/session"
    assert (caught.value.status_code, caught.value.message) == (status, "the gateway is shutting down; retry")
    assert caught.value.retry_after == 7.0
    assert caught.value.headers["retry-after"] == "7"
    ws_url = "ws://" + scripted.url.removeprefix("http://") + "/ws/session"
    assert caught.value.request == RequestInfo("session", "WS", ws_url)


async def test_async_session_handshake_refused_keeps_retry_after(scripted: ScriptedServer) -> None:
    scripted.script(error_reply(503, "the gateway is shutting down; retry", **{"Retry-After": "7"}))
    async with AsyncQwen3TTSClient(base_url=scripted.url) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            async with client.session(voice="ryan"):
                pass
    assert caught.value.message == "the gateway is shutting down; retry"
    assert caught.value.retry_after == 7.0


# A stream's connection that drops after its 200 and some audio: never sent again (the audio already given
# would come twice), and the message says where it broke, not "could not reach the gateway".


def _cut_stream(scripted: ScriptedServer) -> None:
    import numpy as np

    whole = ndjson_reply([np.zeros(240, np.float32)] * 3)
    first_line = whole.body.index(b"\n") + 1
    scripted.script(replace(whole, cut_body_at=first_line + 10), whole)


def test_a_stream_cut_after_audio_is_not_sent_again(
    scripted: ScriptedServer, fast_retry: RetryPolicy
) -> None:
    _cut_stream(scripted)
    received = []
    with Qwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client:
        with pytest.raises(APIConnectionError) as caught:
            for chunk in client.stream("hello", voice="vivian"):
                received.append(chunk.sequence)
    assert received == [0]
    assert len(scripted.requests) == 1
    assert "dropped mid-stream, after 1 chunk(s)" in caught.value.message
    assert caught.value.request == RequestInfo("stream", "POST", f"{scripted.url}/synthesize/stream", 0)


async def test_async_stream_cut_after_audio_is_not_sent_again(
    scripted: ScriptedServer, fast_retry: RetryPolicy
) -> None:
    _cut_stream(scripted)
    received = []
    async with AsyncQwen3TTSClient(base_url=scripted.url, retry_policy=fast_retry) as client:
        with pytest.raises(APIConnectionError, match="dropped mid-stream, after 1 chunk"):
            async for chunk in client.stream("hello", voice="vivian"):
                received.append(chunk.sequence)
    assert received == [0]
    assert len(scripted.requests) == 1
