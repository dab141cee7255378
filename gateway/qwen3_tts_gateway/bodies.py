"""Request bodies that carry reference audio: JSON with base64, or a multipart upload."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile

from qwen3_tts_serving.settings import Settings

from .errors import BadRequestError, UnsupportedMediaTypeError, reference_too_large
from .refaudio import AudioLimits, decode_base64

M = TypeVar("M", bound=BaseModel)
AUDIO_FIELD = "ref_audio"
JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPE = "multipart/form-data"
_MAX_FORM_FIELDS = 64
# Parts that are files: only ref_audio is one, but every file part is parsed so that a repeated ref_audio
# or a file under another field gets its 422 (the request-body limit bounds their bytes).
_MAX_FORM_FILES = _MAX_FORM_FIELDS
_MAX_MESSAGE_CHARS = 200


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:_MAX_MESSAGE_CHARS] if text else type(exc).__name__


def _invalid(loc: tuple[str, ...], message: str, error_type: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": message, "type": error_type}])


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    """What FastAPI reads as JSON: no Content-Type, application/json or application/<anything>+json."""
    return (
        not media_type
        or media_type == JSON_MEDIA_TYPE
        or (media_type.startswith("application/") and media_type.endswith("+json"))
    )


def _unsupported(media_type: str, accepted: tuple[str, ...]) -> UnsupportedMediaTypeError:
    return UnsupportedMediaTypeError(f"Content-Type must be {' or '.join(accepted)}, got {media_type[:64]!r}")


def require_json_body(request: Request) -> None:
    """Dependency of the routes with a JSON body: any other Content-Type is a 415 naming application/json
    (FastAPI passed such a body on unread, and the 422 said it "should be a valid dictionary")."""
    media_type = _media_type(request)
    if not _is_json(media_type):
        raise _unsupported(media_type, (JSON_MEDIA_TYPE,))


# ``dependencies=`` of a route with a JSON body.
JSON_BODY = [Depends(require_json_body)]


def unreadable_json(exc: ValueError | RecursionError) -> RequestValidationError:
    """The 422 for a body that ``json.loads`` could not read (syntax, not UTF-8, nested too deeply, a number
    of too many digits), in the form FastAPI gives a syntax error; handlers.py words them all alike."""
    if isinstance(exc, json.JSONDecodeError):
        reason, loc = exc.msg, ("body", exc.pos)
    elif isinstance(exc, UnicodeDecodeError):
        reason, loc = "not UTF-8 text", ("body",)
    elif isinstance(exc, RecursionError):
        reason, loc = "nested too deeply", ("body",)
    else:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"
        reason, loc = _first_line(exc).split(";")[0], ("body",)
    error = {"type": "json_invalid", "loc": loc, "msg": reason, "ctx": {"error": reason}}
    return RequestValidationError([error])


def validate_model(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def check_text_lengths(limit: int, **fields: str | None) -> None:
    """422 when a text field is longer than ``limit`` (``max_text_length``) characters."""
    errors = [
        {"loc": ("body", name), "msg": f"longer than {limit} characters", "type": "string_too_long"}
        for name, value in fields.items()
        if value is not None and len(value) > limit
    ]
    if errors:
        raise RequestValidationError(errors)


async def _read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise reference_too_large(max_bytes, AUDIO_FIELD)
    return data


def _check_form_parts(parts: list[tuple[str, str | UploadFile]]) -> None:
    """422 for a field given more than once (a form keeps its last value, the first would be lost) and for a
    file under any field but ``ref_audio`` (it would be dropped, or read as a missing field)."""
    counts = Counter(name for name, _ in parts)
    errors = [
        {"loc": ("body", name), "msg": f"{name} given {count} times; give it once", "type": "value_error"}
        for name, count in counts.items()
        if count > 1
    ]
    errors += [
        {"loc": ("body", name), "msg": f"{name} is a file; only {AUDIO_FIELD} is one", "type": "string_type"}
        for name in dict.fromkeys(name for name, value in parts if not isinstance(value, str))
        if name != AUDIO_FIELD and counts[name] == 1
    ]
    if errors:
        raise RequestValidationError(errors)


async def _from_multipart(request: Request, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    try:
        form = await request.form(max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS)
    except FormParserError as exc:
        # Starlette turns its own multipart errors into a 400; the parser's (a bad header line, a wrong
        # boundary) would otherwise surface as a 500.
        raise BadRequestError(f"malformed multipart/form-data body: {_first_line(exc)}") from None
    try:
        parts = form.multi_items()
        _check_form_parts(parts)
        upload = form.get(AUDIO_FIELD)
        if not isinstance(upload, UploadFile):
            raise _invalid(("body", AUDIO_FIELD), "a ref_audio file is required", "missing")
        fields = {name: value for name, value in parts if name != AUDIO_FIELD}
        return fields, await _read_upload(upload, max_bytes)
    finally:
        await form.close()


async def _from_json(request: Request, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    try:
        payload = json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise unreadable_json(exc) from None
    if not isinstance(payload, dict):
        raise _invalid(("body",), "body must be a JSON object", "model_type")
    audio = payload.pop(AUDIO_FIELD, None)
    if not isinstance(audio, str) or not audio:
        raise _invalid(("body", AUDIO_FIELD), "ref_audio (base64 audio) is required", "missing")
    return payload, decode_base64(audio, max_bytes)


async def read_audio_body(request: Request, model: type[M], max_bytes: int) -> tuple[M, bytes]:
    """Parse the non-audio fields into ``model`` and return them with the raw reference audio bytes."""
    media_type = _media_type(request)
    if media_type == FORM_MEDIA_TYPE:
        fields, audio = await _from_multipart(request, max_bytes)
    elif _is_json(media_type):
        fields, audio = await _from_json(request, max_bytes)
    else:
        raise _unsupported(media_type, (JSON_MEDIA_TYPE, FORM_MEDIA_TYPE))
    return validate_model(model, fields), audio


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A property of a form: a field is a string or left out, never null (its optional null branch goes)."""
    branches = [branch for branch in schema.get("anyOf", ()) if branch != {"type": "null"}]
    if len(branches) != 1:
        return schema
    field = {
        key: value
        for key, value in schema.items()
        if key != "anyOf" and not (key == "default" and value is None)
    }
    return {**branches[0], **field}


def audio_body_openapi(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting both body encodings of an endpoint that reads them by hand."""
    form_schema = form_model.model_json_schema()
    form_schema["properties"] = {
        **{name: _form_field(field) for name, field in form_schema.get("properties", {}).items()},
        AUDIO_FIELD: {"type": "string", "format": "binary", "description": "WAV, FLAC, MP3 or OGG file."},
    }
    form_schema["required"] = [*form_schema.get("required", []), AUDIO_FIELD]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_model.model_json_schema()},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    }


def audio_limits(settings: Settings) -> AudioLimits:
    return AudioLimits(
        min_seconds=settings.min_ref_audio_seconds,
        max_seconds=settings.max_ref_audio_seconds,
        max_bytes=settings.max_upload_bytes,
    )
