"""Gateway errors: each carries its HTTP status and a short message for the user (never a traceback).

Error bodies look like OpenAI's, so the OpenAI SDK reads them too::

    {"error": {"status": 422, "type": "invalid_request_error", "message": "...", "errors": [...]}}
"""

from __future__ import annotations

from typing import Any, ClassVar

from qwen3_tts_serving.contract import ErrorKind
from qwen3_tts_serving.settings import Settings


def setting_name(field: str) -> str:
    """How an error names the setting ``field`` (``Settings``), so that whoever runs the gateway knows what to
    change: "max_upload_bytes, env QWEN3_TTS_MAX_UPLOAD_BYTES"."""
    if field not in Settings.model_fields:
        raise KeyError(f"no setting {field!r}")
    return f"{field}, env {Settings.model_config['env_prefix']}{field.upper()}"


# The limits an error names: every upload size, the reference clip's shortest and longest duration.
UPLOAD_LIMIT_SETTING = setting_name("max_upload_bytes")
MIN_REF_AUDIO_SETTING = setting_name("min_ref_audio_seconds")
MAX_REF_AUDIO_SETTING = setting_name("max_ref_audio_seconds")


class GatewayError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return error_body(self.status_code, self.message, self.error_type, param=self.param, errors=errors)


class BadRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "authentication_error"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "not_found_error"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"


class UnsupportedMediaTypeError(GatewayError):
    status_code = 415
    error_type = "invalid_request_error"


class UnprocessableError(GatewayError):
    status_code = 422
    error_type = "invalid_request_error"


class EngineError(GatewayError):
    """An error reported by (or while talking to) the inference server; ``kind`` is what the server's error
    meant (contract.ErrorKind), None when it did not come from the server."""

    kind: ErrorKind | None = None


class EngineInvalidRequestError(EngineError):
    """The model rejected the request (Triton ``INVALID_ARG``); the message is the model's."""

    status_code = 422
    error_type = "invalid_request_error"


class EngineUnavailableError(EngineError):
    """Server down, model not loaded, out of memory or queue full: retry later (503 + Retry-After)."""

    status_code = 503
    error_type = "server_overloaded"


class UpstreamTimeoutError(EngineError):
    status_code = 504
    error_type = "timeout"


class EngineFailureError(EngineError):
    """The model failed internally; details are logged, the user gets a short message."""

    status_code = 502
    error_type = "server_error"


def human_bytes(count: int) -> str:
    """``count`` bytes for a person: "1000 bytes", "48.8 KiB", "20 MiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


def reference_too_large(max_bytes: int, param: str) -> PayloadTooLargeError:
    """The 413 for a reference clip over ``max_upload_bytes`` (however it was sent)."""
    return PayloadTooLargeError(
        f"reference audio exceeds {human_bytes(max_bytes)} ({UPLOAD_LIMIT_SETTING})", param=param
    )


def error_body(
    status: int,
    message: str,
    error_type: str,
    *,
    param: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "type": error_type, "message": message, "param": param}
    if errors:
        error["errors"] = errors
    return {"error": error}
