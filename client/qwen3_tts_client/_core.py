"""Everything the sync and async clients share: configuration, request building, response parsing,
error mapping. The clients only add the I/O (``httpx.Client`` vs ``httpx.AsyncClient``, ``time.sleep``
vs ``asyncio.sleep``); each public method is a one-line call of a builder below.

Field names follow the gateway's routes (``gateway/qwen3_tts_gateway/routers``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import numpy as np

from ._version import __version__
from .audio import CONTENT_TYPES, encode_audio, pcm16_to_float
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    Qwen3TTSError,
    RequestInfo,
    error_from_response,
)
from .retry import RetryPolicy, RetryState, header_value, parse_retry_after
from .routing import CLONE_PREFIX
from .types import AudioChunk, HealthStatus, Language, SamplingOptions, Speaker, SpeechResult, Voice

T = TypeVar("T")

ENV_BASE_URL = "QWEN3_TTS_BASE_URL"
ENV_API_KEY = "QWEN3_TTS_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 120.0  # a long paragraph on a busy server takes a while; connect fails fast below
DEFAULT_CONNECT_TIMEOUT_S = 10.0
SAMPLING_KEYS = frozenset(SamplingOptions.__annotations__)

# A reference clip: a path, the bytes of an encoded file, or (mono float samples, sample rate).
AudioInput = str | Path | bytes | tuple[np.ndarray, int]
TimeoutLike = float | httpx.Timeout | None
# Failures before any byte of the request was sent (no connection, or none free in the pool).
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One API call, described without doing any I/O; ``parse`` turns the (read) response into T."""

    name: str
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Error statuses that are an answer here, not a failure (GET /ready says "not ready" with a 503).
    ok_statuses: frozenset[int] = frozenset()
    retry: bool = True  # probes report the present state; retrying them only delays the answer
    # False for a call with a lasting effect (storing a voice): it is retried only when it cannot have
    # been carried out (retry.is_safe_to_resend), never after a read timeout or a 5xx that may have stored it.
    idempotent: bool = True


# --------------------------------------------------------------------------------------- config


def resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return url.rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    return api_key if api_key is not None else (os.environ.get(ENV_API_KEY) or None)


def resolve_timeout(timeout: TimeoutLike) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is None:
        return httpx.Timeout(None, connect=DEFAULT_CONNECT_TIMEOUT_S)
    # Connecting to a dead host should fail in seconds even when reads may take minutes.
    return httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT_S))


def resolve_retry_policy(retry_policy: RetryPolicy | None, max_retries: int | None) -> RetryPolicy:
    """The client's policy: ``retry_policy``, else the default one with ``max_retries`` (default 2)."""
    if retry_policy is None:
        return RetryPolicy() if max_retries is None else RetryPolicy(max_retries=max_retries)
    if max_retries is not None:
        # Neither may silently win: a RetryPolicy has its own max_retries, which is where the count goes.
        raise ValueError(
            "give either retry_policy or max_retries, not both; set the count in the policy: "
            "RetryPolicy(max_retries=...)"
        )
    return retry_policy


class ClientCore:
    """Configuration plus the pure steps of a call, used by both clients."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout: TimeoutLike,
        max_retries: int | None,
        retry_policy: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        self.timeout = resolve_timeout(timeout)
        self.retry_policy = resolve_retry_policy(retry_policy, max_retries)
        self.headers = {"User-Agent": f"qwen3-tts-client/{__version__}", **(headers or {})}
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"

    def http_client_options(self) -> dict[str, Any]:
        return {"timeout": self.timeout}

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments of a ``SpeechSession``/``AsyncSpeechSession`` besides the URL and start."""
        return {"headers": self.headers, "open_timeout": self.timeout.connect, "timeout": self.timeout.read}

    def request_options(self, op: Operation[Any]) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.build_request`` (same for the async client).

        URL and headers go on each request rather than on the httpx client, so a caller's own
        ``http_client`` (proxies, custom transport) gets them too.
        """
        options: dict[str, Any] = {
            "method": op.method,
            "url": self.base_url + op.path,
            "headers": {**self.headers, **op.headers},
        }
        if op.json is not None:
            options["json"] = op.json
        return options

    def connection_error(self, exc: httpx.TransportError) -> APIConnectionError:
        error: APIConnectionError
        if isinstance(exc, httpx.TimeoutException):
            error = APITimeoutError(f"timed out talking to {self.base_url} ({type(exc).__name__})")
        else:
            reason = str(exc) or type(exc).__name__
            error = APIConnectionError(f"could not reach the gateway at {self.base_url}: {reason}")
        error.request_sent = not isinstance(exc, _UNSENT_ERRORS)
        return error

    def stream_cut_error(self, exc: httpx.TransportError, chunks: int) -> APIConnectionError:
        """The error for a stream whose connection failed after its 200: the gateway was reached, so the
        message says where it broke rather than "could not reach"."""
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                f"the gateway at {self.base_url} stopped sending mid-stream, after {chunks} chunk(s) "
                f"({type(exc).__name__})"
            )
        reason = str(exc) or type(exc).__name__
        return APIConnectionError(
            f"the connection to the gateway at {self.base_url} dropped mid-stream, after {chunks} "
            f"chunk(s): {reason}"
        )

    def tag(self, error: Qwen3TTSError, op: Operation[Any], attempt: int) -> Qwen3TTSError:
        """``error`` naming the call it belongs to (kept if it names one already)."""
        if error.request is None:
            error.request = RequestInfo(op.name, op.method, self.base_url + op.path, attempt)
        return error

    def retry_state(self, op: Operation[Any]) -> RetryState:
        policy = self.retry_policy if op.retry else RetryPolicy(max_retries=0)
        return RetryState(policy, idempotent=op.idempotent)

    def is_failure(self, op: Operation[Any], response: httpx.Response) -> bool:
        return response.is_error and response.status_code not in op.ok_statuses

    def status_error(
        self, response: httpx.Response, body: bytes, *, cut_short: bool = False
    ) -> APIStatusError:
        """The exception for an error response; ``body`` is what could be read of it (all of it unless
        ``cut_short``: the connection dropped mid-body, which must not hide the status behind an httpx
        error)."""
        retry_after = parse_retry_after(header_value(response.headers, "retry-after"))
        return error_from_response(
            response.status_code,
            body,
            dict(response.headers),
            reason=response.reason_phrase,
            retry_after=retry_after,
            cut_short=cut_short,
        )


# --------------------------------------------------------------------------------------- requests


def sampling_fields(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """Validate sampling keyword arguments (a typo must not be silently ignored) and drop Nones."""
    unknown = set(sampling) - SAMPLING_KEYS
    if unknown:
        raise TypeError(
            f"unknown sampling option(s): {', '.join(sorted(unknown))}; valid: {sorted(SAMPLING_KEYS)}"
        )
    return {key: value for key, value in sampling.items() if value is not None}


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def audio_bytes(audio: AudioInput) -> bytes:
    """The bytes of an encoded audio file from any AudioInput (arrays are encoded as WAV)."""
    if isinstance(audio, bytes | bytearray | memoryview):
        return bytes(audio)
    if isinstance(audio, str | Path):
        return Path(audio).read_bytes()
    if isinstance(audio, tuple) and len(audio) == 2:
        samples, sample_rate = audio
        return encode_audio(np.asarray(samples, dtype=np.float32).reshape(-1), int(sample_rate), "wav")
    raise TypeError("audio must be a path, the bytes of an audio file, or (samples, sample_rate)")


def audio_base64(audio: AudioInput) -> str:
    return base64.b64encode(audio_bytes(audio)).decode("ascii")


def synthesis_body(text: str, *, sampling: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """The JSON body: ``text``, the given fields that are not None, and the sampling options.

    The gateway forbids unknown fields, so only what the caller set is sent (its defaults apply).
    """
    body = _drop_none(text=text, **fields)
    body.update(sampling_fields(sampling or {}))
    return body


def speech_operation(name: str, path: str, body: dict[str, Any]) -> Operation[SpeechResult]:
    fmt = str(body.get("response_format") or "wav")
    return Operation(name, "POST", path, lambda response: parse_speech(response, fmt), json=body)


def speak_op(text: str, **kwargs: Any) -> Operation[SpeechResult]:
    return speech_operation("speak", "/synthesize", synthesis_body(text, **kwargs))


def design_op(text: str, **kwargs: Any) -> Operation[SpeechResult]:
    return speech_operation("design", "/design", synthesis_body(text, **kwargs))


def clone_op(
    text: str,
    *,
    reference_audio: AudioInput,
    ref_text: str | None = None,
    x_vector_only: bool | None = None,
    **kwargs: Any,
) -> Operation[SpeechResult]:
    body = synthesis_body(
        text,
        ref_audio=audio_base64(reference_audio),
        ref_text=ref_text,
        x_vector_only=x_vector_only,
        **kwargs,
    )
    return speech_operation("clone", "/clone", body)


def stream_op(text: str, **kwargs: Any) -> Operation[None]:
    body = synthesis_body(text, **kwargs)
    return Operation("stream", "POST", "/synthesize/stream", _ignore, json=body, headers=_NDJSON)


def create_voice_op(
    *, reference_audio: AudioInput, ref_text: str | None, name: str | None, x_vector_only: bool | None
) -> Operation[Voice]:
    body = _drop_none(
        ref_audio=audio_base64(reference_audio), ref_text=ref_text, name=name, x_vector_only=x_vector_only
    )
    return Operation(
        "create_voice", "POST", "/voices", lambda r: parse_voice(_json(r)), json=body, idempotent=False
    )


def list_voices_op() -> Operation[list[Voice]]:
    return Operation(
        "list_voices", "GET", "/voices", lambda r: [parse_voice(v) for v in _items(_json(r), "voices")]
    )


def get_voice_op(voice_id: str) -> Operation[Voice]:
    return Operation("get_voice", "GET", f"/voices/{_path_id(voice_id)}", lambda r: parse_voice(_json(r)))


def delete_voice_op(voice_id: str) -> Operation[None]:
    return Operation("delete_voice", "DELETE", f"/voices/{_path_id(voice_id)}", _ignore)


def speakers_op() -> Operation[list[Speaker]]:
    return Operation(
        "speakers", "GET", "/speakers", lambda r: [parse_speaker(s) for s in _items(_json(r), "speakers")]
    )


def languages_op() -> Operation[list[Language]]:
    return Operation(
        "languages", "GET", "/languages", lambda r: [parse_language(x) for x in _items(_json(r), "languages")]
    )


def health_op() -> Operation[HealthStatus]:
    return Operation("health", "GET", "/health", parse_health, retry=False)


def ready_op() -> Operation[HealthStatus]:
    return Operation("ready", "GET", "/ready", parse_health, ok_statuses=frozenset({503}), retry=False)


_NDJSON = {"Accept": "application/x-ndjson"}


def _path_id(voice_id: str) -> str:
    # Accept "qwen3-clone-<id>" too: that is what users copy around.
    if voice_id.lower().startswith(CLONE_PREFIX):
        voice_id = voice_id[len(CLONE_PREFIX) :]
    if not voice_id or "/" in voice_id or voice_id in (".", ".."):
        raise ValueError(f"invalid voice id {voice_id!r}")
    # One path segment whatever it holds: an unescaped "?" or "#" would cut the id short.
    return quote(voice_id, safe="")


# --------------------------------------------------------------------------------------- responses


def _ignore(_response: httpx.Response) -> None:
    return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise Qwen3TTSError(
            f"the gateway sent invalid JSON for {response.request.url.path}", status_code=response.status_code
        ) from exc


def _items(payload: Any, key: str) -> list[Any]:
    """The list in ``{key: [...]}`` (the gateway's shape) or a bare ``[...]``."""
    if isinstance(payload, Mapping) and isinstance(payload.get(key), list):
        return payload[key]
    if isinstance(payload, list):
        return payload
    raise Qwen3TTSError(f"unexpected {key} payload from the gateway: {str(payload)[:120]}")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def parse_speech(response: httpx.Response, fmt: str) -> SpeechResult:
    headers = response.headers
    return SpeechResult(
        audio=response.content,
        format=fmt,
        content_type=headers.get("content-type", CONTENT_TYPES.get(fmt, "application/octet-stream")),
        sample_rate=_int(headers.get("x-sample-rate")),
        duration=_float(headers.get("x-audio-duration")),
        finish_reason=headers.get("x-finish-reason") or None,
        headers=dict(headers),
    )


def parse_voice(payload: Any) -> Voice:
    if not isinstance(payload, Mapping) or not payload.get("id"):
        raise Qwen3TTSError(f"unexpected voice payload: {payload!r}"[:200])
    known = {"id", "name", "ref_text", "created_at", "duration_s", "x_vector_only"}
    return Voice(
        id=str(payload["id"]),
        name=payload.get("name"),
        ref_text=payload.get("ref_text"),
        created_at=_float(payload.get("created_at")) if payload.get("created_at") is not None else None,
        duration_s=_float(payload.get("duration_s")) if payload.get("duration_s") is not None else None,
        x_vector_only=bool(payload.get("x_vector_only", False)),
        extra={k: v for k, v in payload.items() if k not in known},
    )


def parse_speaker(payload: Any) -> Speaker:
    if isinstance(payload, str):
        return Speaker(payload)
    known = {"name", "description", "native_language"}
    return Speaker(
        name=str(payload.get("name") or payload.get("id")),
        description=payload.get("description"),
        native_language=payload.get("native_language"),
        extra={k: v for k, v in payload.items() if k not in known},
    )


def parse_language(payload: Any) -> Language:
    if isinstance(payload, str):
        return Language(payload)
    code = payload.get("code") or payload.get("id") or payload.get("name")
    known = {"code", "name"}
    return Language(
        code=str(code), name=payload.get("name"), extra={k: v for k, v in payload.items() if k not in known}
    )


def parse_health(response: httpx.Response) -> HealthStatus:
    """``/health`` answers ``{"status": "ok"}``; ``/ready`` ``{"ready": bool, "models": {...}}``."""
    try:
        details = response.json()
    except ValueError:
        details = {"body": response.text}
    if not isinstance(details, dict):
        details = {"body": details}
    if "ready" in details:
        ok = response.is_success and details["ready"] is True
        status = "ready" if ok else "not ready"
    else:
        status = str(details.get("status", "ok" if response.is_success else "error"))
        ok = response.is_success and status.lower() in {"ok", "ready", "healthy", "alive", "up"}
    return HealthStatus(ok=ok, status=status, details=details)


# --------------------------------------------------------------------------------------- streams


def decode_chunk_audio(data: str, fmt: str) -> tuple[np.ndarray, bytes]:
    raw = base64.b64decode(data) if data else b""
    if fmt in ("pcm", "pcm16", "s16le", "pcm_s16le"):
        return pcm16_to_float(raw), raw
    if fmt in ("f32le", "pcm_f32le", "float32"):
        return np.frombuffer(raw, dtype="<f4").astype(np.float32), raw
    raise Qwen3TTSError(f"unsupported stream audio encoding {fmt!r}")


def stream_payload(line: str | bytes) -> Mapping[str, Any] | None:
    """One NDJSON line as a JSON object; blank lines → None; an ``error`` line raises its error."""
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    if not line.strip():
        return None
    try:
        payload = json.loads(line)
    except ValueError as exc:
        raise Qwen3TTSError(f"the gateway sent a malformed stream line: {line[:80]!r}") from exc
    if not isinstance(payload, Mapping):
        raise Qwen3TTSError(f"the gateway sent a malformed stream line: {line[:80]!r}")
    if "error" in payload or "detail" in payload:
        raise stream_error(payload)
    return payload


def chunk_of(payload: Mapping[str, Any]) -> AudioChunk:
    fmt = str(payload.get("encoding") or payload.get("format") or "pcm")
    samples, raw = decode_chunk_audio(payload.get("audio") or "", fmt)
    return AudioChunk(
        sequence=int(payload.get("sequence", 0)),
        audio=samples,
        sample_rate=int(payload.get("sample_rate", 24000)),
        is_last=bool(payload.get("is_last", False)),
        finish_reason=payload.get("finish_reason") or None,
        data=raw,
        format="pcm" if fmt in ("pcm", "pcm16", "s16le", "pcm_s16le") else fmt,
    )


def is_done_line(payload: Mapping[str, Any]) -> bool:
    """The stream's last line ``{"type": "done", "finish_reason", "duration", "chunks", ...}``."""
    return payload.get("type") == "done"


def parse_stream_line(line: str | bytes) -> AudioChunk | None:
    """One NDJSON line → a chunk; blank lines and the closing ``done`` line → None; an ``error`` line
    raises its error."""
    payload = stream_payload(line)
    if payload is None or is_done_line(payload):
        return None
    return chunk_of(payload)


def stream_error(payload: Mapping[str, Any]) -> APIStatusError:
    """An error reported inside a stream (after the 200): same classes as a status error."""
    error = payload.get("error")
    status = error.get("status") if isinstance(error, Mapping) else payload.get("status")
    status_code = int(status) if isinstance(status, int | str) and str(status).isdigit() else 500
    return error_from_response(status_code, json.dumps(payload))


class StreamState:
    """Checks the order of a stream's chunks; ``finish`` raises when the last chunk never came.

    ``summary`` holds the gateway's closing ``done`` line (finish_reason, duration, chunks) once read.
    """

    def __init__(self) -> None:
        self.done = False
        self.count = 0
        self.summary: dict[str, Any] | None = None

    def feed(self, lines: Iterable[str | bytes]) -> Iterable[AudioChunk]:
        for line in lines:
            payload = stream_payload(line)
            if payload is None:
                continue
            if is_done_line(payload):
                self.summary = dict(payload)
                continue
            yield self.accept(chunk_of(payload))

    def accept(self, chunk: AudioChunk) -> AudioChunk:
        if self.done:
            raise Qwen3TTSError("the gateway sent audio after the last chunk")
        self.count += 1
        self.done = chunk.is_last
        return chunk

    def finish(self) -> None:
        if not self.done:
            raise APIConnectionError(f"the stream ended after {self.count} chunk(s) without the last one")
