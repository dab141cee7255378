"""``TTSEngine`` over Triton's gRPC API (``tritonclient.grpc.aio``), following docs/triton-io-contract.md.

Streaming models are called with ``stream_infer`` (one request per gRPC stream, empty FINAL response
enabled); closing the async iterator returned by :meth:`TritonEngine.stream` cancels the gRPC call, which
cancels the request inside Triton. Errors are mapped by :func:`classify_error`: errors inside a stream
carry only a message (no status code), so the message is inspected too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult
from tritonclient.utils import InferenceServerException

from ..errors import (
    EngineError,
    EngineFailureError,
    EngineInvalidRequestError,
    EngineUnavailableError,
    UpstreamTimeoutError,
)
from .base import VOICE_PROMPT_MODEL, AudioChunk, SamplingParams, SynthesisRequest, VoicePrompt

logger = logging.getLogger(__name__)

_MAX_MESSAGE_CHARS = 300
_OOM_MARKERS = ("out of memory", "retry")
_QUEUE_MARKERS = ("queue", "overload", "too many")
_DOWN_MARKERS = ("connection refused", "failed to connect", "unavailable", "not ready", "unknown model")
_TIMEOUT_MARKERS = ("deadline exceeded", "timed out", "timeout")
_INTERNAL_MARKERS = ("failed to process the request", "traceback", "\nat:", "stub process", "internal")
_CODES_UNAVAILABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "NOT_FOUND", "ABORTED"}
_SAMPLING_DTYPES = {
    "do_sample": ("BOOL", np.bool_),
    "temperature": ("FP32", np.float32),
    "top_k": ("INT32", np.int32),
    "top_p": ("FP32", np.float32),
    "repetition_penalty": ("FP32", np.float32),
    "max_new_tokens": ("INT32", np.int32),
    "seed": ("INT64", np.int64),
}


class StreamCancelledError(EngineError):
    status_code = 499
    error_type = "cancelled"


def _short(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "error"
    return line[:_MAX_MESSAGE_CHARS]


def _code_name(code: Any) -> str | None:
    if code is None:
        return None
    name = getattr(code, "name", None) or str(code)
    return name.rsplit(".", 1)[-1].upper()


def classify_error(message: str, code: Any = None) -> EngineError:
    """Map a Triton/gRPC error (status code when known, else the message) to a gateway error."""
    name = _code_name(code)
    lowered = message.lower()
    if name == "INVALID_ARGUMENT":
        return EngineInvalidRequestError(_short(message))
    if name == "DEADLINE_EXCEEDED" or any(m in lowered for m in _TIMEOUT_MARKERS):
        return UpstreamTimeoutError("the model server did not answer in time")
    if name == "CANCELLED":
        return StreamCancelledError("request cancelled")
    if any(m in lowered for m in _OOM_MARKERS):
        return EngineUnavailableError("the model server is out of memory; retry later")
    if any(m in lowered for m in _QUEUE_MARKERS):
        return EngineUnavailableError("the model server is overloaded; retry later")
    if name in _CODES_UNAVAILABLE or any(m in lowered for m in _DOWN_MARKERS):
        return EngineUnavailableError("the model server is unavailable; retry later")
    if name is not None or any(m in lowered for m in _INTERNAL_MARKERS):
        logger.error("model server failure (%s): %s", name, message)
        return EngineFailureError("synthesis failed in the model server")
    # An error inside a decoupled stream has no code: the models send INVALID_ARG with a message
    # naming the valid choices (contract), anything else matched a marker above.
    return EngineInvalidRequestError(_short(message))


def _from_exception(exc: BaseException) -> EngineError:
    if isinstance(exc, grpc.aio.AioRpcError):
        return classify_error(exc.details() or "", exc.code())
    if isinstance(exc, InferenceServerException):
        return classify_error(exc.message() or str(exc), exc.status())
    logger.exception("unexpected error talking to Triton", exc_info=exc)
    return EngineUnavailableError("the model server is unavailable; retry later")


def _tensor(name: str, value: np.ndarray, datatype: str) -> InferInput:
    tensor = InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


def _bytes(name: str, value: str) -> InferInput:
    return _tensor(name, np.array([[value.encode("utf-8")]], dtype=np.object_), "BYTES")


def _scalar(name: str, value: Any, datatype: str, dtype: Any) -> InferInput:
    return _tensor(name, np.array([[value]], dtype=dtype), datatype)


def sampling_inputs(sampling: SamplingParams) -> list[InferInput]:
    inputs = []
    for name, (datatype, dtype) in _SAMPLING_DTYPES.items():
        value = getattr(sampling, name)
        if value is not None:
            inputs.append(_scalar(name, value, datatype, dtype))
    return inputs


def prompt_inputs(prompt: VoicePrompt) -> list[InferInput]:
    """A stored prompt: in-context (codes + transcript) when it has both, else x-vector only."""
    embedding = np.asarray(prompt.speaker_embedding, dtype=np.float32).reshape(1, -1)
    codes = np.asarray(prompt.ref_codes, dtype=np.int64).reshape(-1, 16)
    in_context = not prompt.x_vector_only and codes.shape[0] > 0 and bool(prompt.ref_text)
    inputs = [
        _tensor("speaker_embedding", embedding, "FP32"),
        _scalar("x_vector_only", not in_context, "BOOL", np.bool_),
    ]
    if in_context:
        inputs.append(_tensor("ref_codes", codes[None], "INT64"))
        inputs.append(_bytes("ref_text", prompt.ref_text or ""))
    return inputs


def reference_inputs(audio: np.ndarray, sample_rate: int) -> list[InferInput]:
    samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    return [
        _tensor("ref_audio", samples, "FP32"),
        _scalar("ref_sample_rate", sample_rate, "INT32", np.int32),
    ]


def build_inputs(request: SynthesisRequest) -> list[InferInput]:
    """The Triton inputs of one synthesis request (batch dimension 1)."""
    inputs = [_bytes("text", request.text), _bytes("language", request.language)]
    if request.speaker is not None:
        inputs.append(_bytes("speaker", request.speaker))
    if request.instruct:
        inputs.append(_bytes("instruct", request.instruct))
    if request.voice_prompt is not None:
        inputs.extend(prompt_inputs(request.voice_prompt))
    elif request.ref_audio is not None and request.ref_sample_rate is not None:
        inputs.extend(reference_inputs(request.ref_audio, request.ref_sample_rate))
        if request.ref_text:
            inputs.append(_bytes("ref_text", request.ref_text))
        if request.x_vector_only is not None:
            inputs.append(_scalar("x_vector_only", request.x_vector_only, "BOOL", np.bool_))
    inputs.extend(sampling_inputs(request.sampling))
    return inputs


def _first(result: InferResult, name: str) -> Any:
    value = result.as_numpy(name)
    if value is None or value.size == 0:
        raise EngineFailureError(f"the model server response lacks '{name}'")
    return value.reshape(-1)[0]


def parse_chunk(result: InferResult) -> AudioChunk:
    audio = result.as_numpy("audio")
    if audio is None:
        raise EngineFailureError("the model server response lacks 'audio'")
    reason = _first(result, "finish_reason")
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return AudioChunk(
        audio=np.asarray(audio, dtype=np.float32).reshape(-1),
        sample_rate=int(_first(result, "sample_rate")),
        sequence=int(_first(result, "sequence")),
        is_last=bool(_first(result, "is_last")),
        finish_reason=reason or "",
    )


def is_final(result: InferResult) -> bool:
    params = result.get_response().parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param


def has_outputs(result: InferResult) -> bool:
    return len(result.get_response().outputs) > 0


class TritonEngine:
    """Talks to Triton over gRPC; the client is created lazily inside the running event loop."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._client: grpcclient.InferenceServerClient | None = None

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self._url)
        return self._client

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready(client_timeout=5.0))
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            logger.warning("Triton not ready at %s: %s", self._url, _short(str(exc)))
            return False

    async def model_ready(self, name: str) -> bool:
        try:
            return bool(await self.client.is_model_ready(name, client_timeout=5.0))
        except (InferenceServerException, grpc.aio.AioRpcError):
            return False

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        inputs = build_inputs(request)
        request_id = uuid.uuid4().hex

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {
                "model_name": request.model,
                "inputs": inputs,
                "request_id": request_id,
                "parameters": {"triton_enable_empty_final_response": True},
            }

        responses = self.client.stream_infer(requests(), stream_timeout=self._timeout_s)
        finished = False
        try:
            async for result, error in responses:
                if error is not None:
                    raise _from_exception(error)
                if has_outputs(result):
                    yield parse_chunk(result)
                if is_final(result):
                    finished = True
                    return
            finished = True
        except EngineError:
            raise
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            raise _from_exception(exc) from None
        finally:
            if not finished:
                logger.info("cancelling Triton request %s (%s)", request_id, request.model)
                responses.cancel()

    async def create_voice_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None, x_vector_only: bool
    ) -> VoicePrompt:
        inputs = reference_inputs(audio, sample_rate)
        if ref_text:
            inputs.append(_bytes("ref_text", ref_text))
        inputs.append(_scalar("x_vector_only", x_vector_only, "BOOL", np.bool_))
        outputs = [InferRequestedOutput("speaker_embedding"), InferRequestedOutput("ref_codes")]
        try:
            result = await self.client.infer(
                VOICE_PROMPT_MODEL, inputs, outputs=outputs, client_timeout=self._timeout_s
            )
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            raise _from_exception(exc) from None
        embedding = result.as_numpy("speaker_embedding")
        codes = result.as_numpy("ref_codes")
        if embedding is None or codes is None:
            raise EngineFailureError("the voice_prompt model returned no prompt")
        return VoicePrompt(
            speaker_embedding=np.asarray(embedding, dtype=np.float32).reshape(-1),
            ref_codes=np.asarray(codes, dtype=np.int64).reshape(-1, 16),
            ref_text=ref_text or None,
            x_vector_only=x_vector_only,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
