"""Exceptions raised by the clients, one class per HTTP status the gateway answers with.

Every error carries the HTTP ``status_code`` (``None`` when no response arrived), the server's
``message`` unchanged, and ``request``: which call failed (operation, method, URL, attempt), so callers can
show it to a person or branch on the class. The mapping from a
response to an exception lives here (not in the clients) so the sync client, the async client and the
provider raise exactly the same thing for the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadGatewayError",
    "BadRequestError",
    "CircuitOpenError",
    "GatewayTimeoutError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Qwen3TTSError",
    "RateLimitError",
    "RequestInfo",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "error_for_status",
    "error_from_response",
    "message_from_body",
]


@dataclass(frozen=True)
class RequestInfo:
    """Which call an error belongs to (the TypeScript client's ``RequestContext``)."""

    operation: str  # the client method: speak, stream, create_voice, session, ...
    method: str  # GET, POST, DELETE; WS for a session
    url: str
    attempt: int = 0  # 0 for the first try, n for the n-th retry


class Qwen3TTSError(Exception):
    """Base class: ``status_code`` (``None`` without a response), ``message``, raw ``detail``, ``request``
    (the failed call; ``None`` for an error raised outside a call)."""

    status_code: int | None = None
    request: RequestInfo | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        request: RequestInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.request = request
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.detail = detail if detail is not None else message
        self.headers: dict[str, str] = dict(headers or {})
        # Seconds the server asked us to wait (Retry-After), already parsed; None when not given.
        self.retry_after = retry_after

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"{self.status_code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, message={self.message!r})"


class APIStatusError(Qwen3TTSError):
    """The gateway answered with an error status that has no more specific class."""


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class RequestTimeoutError(APIStatusError):
    status_code = 408


class PayloadTooLargeError(APIStatusError):
    status_code = 413


class UnsupportedMediaTypeError(APIStatusError):
    """415: the body's Content-Type is neither JSON nor, where a route takes one, multipart/form-data."""

    status_code = 415


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    """500, and any other 5xx without its own class (the real status stays in ``status_code``)."""

    status_code = 500


class BadGatewayError(InternalServerError):
    """502: the model failed (or a proxy in front of the gateway could not reach it)."""

    status_code = 502


class ServiceUnavailableError(APIStatusError):
    status_code = 503


class GatewayTimeoutError(APIStatusError):
    status_code = 504


class APIConnectionError(Qwen3TTSError):
    """No HTTP answer: connection refused, DNS failure, connection reset."""

    # False when the request never left this machine (no connection was made): then the server cannot
    # have acted on it, and even a call that is not idempotent may be sent again.
    request_sent: bool = True


class APITimeoutError(APIConnectionError):
    """The client gave up waiting (connect/read/write timeout) before an answer came."""


class CircuitOpenError(ServiceUnavailableError):
    """The provider's circuit breaker is open: failing fast without calling the gateway."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    cls.status_code: cls  # type: ignore[misc]
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        RequestTimeoutError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        UnprocessableEntityError,
        RateLimitError,
        InternalServerError,
        BadGatewayError,
        ServiceUnavailableError,
        GatewayTimeoutError,
    )
}


def error_for_status(status_code: int) -> type[APIStatusError]:
    """The exception class for an HTTP status (unknown 5xx → InternalServerError)."""
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if status_code >= 500:
        return InternalServerError
    return APIStatusError


def _format_validation_item(item: Any) -> str:
    # FastAPI's 422 detail is a list of {"loc": [...], "msg": "...", ...}; keep it readable on one line.
    if isinstance(item, Mapping) and "msg" in item:
        loc = [str(part) for part in item.get("loc", []) if part != "body"]
        return f"{'.'.join(loc)}: {item['msg']}" if loc else str(item["msg"])
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)


def message_from_body(body: bytes | str, fallback: str) -> tuple[str, Any]:
    """(human message, raw detail) from an error body.

    Understands ``{"error": {"message": ...}}`` (the gateway, OpenAI-style), ``{"detail": ...}``
    (FastAPI's default, string or validation list) and plain text.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        payload = json.loads(text) if text.strip() else None
    except ValueError:
        # Not JSON (a proxy's HTML page, plain text): the text itself is the best message there is.
        return (text.strip() or fallback), text
    if isinstance(payload, Mapping) and isinstance(payload.get("error"), Mapping):
        # OpenAI-style body ({"error": {"message": ..., "type": ..., "errors": [...]}}), which the
        # gateway sends so the OpenAI SDK can read it too; the message already names valid choices.
        error = payload["error"]
        message = error.get("message")
        if isinstance(message, str) and message:
            return message, error
        detail = error.get("errors") or error
    elif isinstance(payload, Mapping) and "detail" in payload:
        detail = payload["detail"]
    elif isinstance(payload, Mapping) and "message" in payload:
        detail = payload["message"]
    else:
        detail = payload
    if detail is None:
        return fallback, payload
    if isinstance(detail, str):
        return detail, detail
    if isinstance(detail, list):
        return "; ".join(_format_validation_item(item) for item in detail) or fallback, detail
    return json.dumps(detail, ensure_ascii=False), detail


def error_from_response(
    status_code: int,
    body: bytes | str,
    headers: Mapping[str, str] | None = None,
    *,
    reason: str = "",
    retry_after: float | None = None,
    cut_short: bool = False,
) -> APIStatusError:
    """Build the exception for an error response, keeping the server's status and message.

    ``cut_short``: the connection dropped while the body was read; ``body`` is the part that came.
    """
    message, detail = message_from_body(body, reason or f"HTTP {status_code}")
    if cut_short:
        message = f"{message} (the connection dropped while the error was read)"
    cls = error_for_status(status_code)
    return cls(message, status_code=status_code, detail=detail, headers=headers, retry_after=retry_after)
