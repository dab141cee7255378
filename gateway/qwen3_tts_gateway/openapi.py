"""The OpenAPI document with this deployment's limits filled in, so generated clients and schema fuzzers
see what the API really accepts (the bodies' static parts are in schemas.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from qwen3_tts_serving.sampling_ranges import INT64_MAX
from qwen3_tts_serving.settings import Settings

from .schemas import TEXT_LIMIT_KEY

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _integer_bounds(schema: dict[str, Any]) -> None:
    """FastAPI's OpenAPI model holds bounds as floats (4096.0; 2**63 - 1 became 2**63): integers again."""
    for key in _BOUNDS:
        value = schema.get(key)
        if isinstance(value, float) and value.is_integer():
            schema[key] = max(min(int(value), INT64_MAX), -INT64_MAX - 1)


def fill_limits(document: Any, max_text_length: int) -> None:
    """In place: every schema marked with ``TEXT_LIMIT_KEY`` gets ``maxLength: max_text_length``, and
    integer schemas get integer bounds."""
    if isinstance(document, dict):
        if document.pop(TEXT_LIMIT_KEY, None):
            document["maxLength"] = max_text_length
        if document.get("type") == "integer":
            _integer_bounds(document)
        for value in document.values():
            fill_limits(value, max_text_length)
    elif isinstance(document, list):
        for value in document:
            fill_limits(value, max_text_length)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) with ``settings``' limits."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            fill_limits(document, settings.max_text_length)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
