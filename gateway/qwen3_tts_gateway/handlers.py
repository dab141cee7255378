"""Exception handlers: one error body shape for every status, short messages, no tracebacks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .bodies import unreadable_json
from .errors import AuthenticationError, EngineUnavailableError, GatewayError, error_body
from .metrics import GatewayMetrics
from .middleware import route_label

logger = logging.getLogger(__name__)
_VALUE_ERROR_PREFIXES = ("Value error, ", "Assertion failed, ")
_MAX_REASON_CHARS = 100  # of the JSON parser's own words
_HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


def _json_syntax_error(error: dict[str, Any]) -> dict[str, Any]:
    """FastAPI reports a body that is not JSON at ``("body", <character offset>)`` with "JSON decode error":
    the offset is no field (it became ``param``), and the message hid the reason. One message for every
    route, those that parse their bodies themselves (bodies.py) included."""
    loc = tuple(error.get("loc", ()))
    position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    reason = (error.get("ctx") or {}).get("error")
    message = "not valid JSON"
    if reason:
        message += f": {str(reason)[:_MAX_REASON_CHARS]}"
    if position is not None:
        message += f" at character {position}"
    return {**error, "loc": ("body",), "msg": message}


def format_validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as ``{"loc": "body.speaker", "message": ..., "type": ...}``."""
    formatted = []
    for error in errors:
        if error.get("type") == "json_invalid":
            error = _json_syntax_error(error)
        message = str(error.get("msg", "invalid value"))
        for prefix in _VALUE_ERROR_PREFIXES:
            message = message.removeprefix(prefix)
        loc = ".".join(str(part) for part in error.get("loc", ()))
        formatted.append({"loc": loc, "message": message, "type": error.get("type", "value_error")})
    return formatted


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    formatted = format_validation_errors(errors) or [
        {"loc": "body", "message": "invalid request", "type": ""}
    ]
    summary = "; ".join(f"{e['loc']}: {e['message']}" if e["loc"] else e["message"] for e in formatted[:3])
    first_loc = errors[0].get("loc", ()) if errors and errors[0].get("type") != "json_invalid" else ()
    param = str(first_loc[-1]) if len(first_loc) > 1 else None
    return error_body(422, summary, "invalid_request_error", param=param, errors=formatted)


def install_error_handlers(app: FastAPI, *, retry_after_s: int, metrics: GatewayMetrics) -> None:
    def count(request: Request, error_type: str) -> None:
        metrics.errors.labels(route_label(request.scope), error_type).inc()

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        count(request, exc.error_type)
        headers = {}
        if isinstance(exc, EngineUnavailableError):
            headers["Retry-After"] = str(retry_after_s)
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        count(request, "validation_error")
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI's bare "There was an error parsing the body" for what json.loads could not read
            # (syntax errors alone got a 422): the 422 of every other body that is not JSON.
            return await validation_error(request, unreadable_json(exc.__cause__))
        error_type = _HTTP_TYPES.get(
            exc.status_code, "invalid_request_error" if exc.status_code < 500 else ""
        )
        count(request, error_type or "server_error")
        body = error_body(exc.status_code, str(exc.detail), error_type or "server_error")
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
        count(request, "server_error")
        return JSONResponse(error_body(500, "internal error", "server_error"), status_code=500)
