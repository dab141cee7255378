"""``TTSEngine`` over Triton's gRPC API (``tritonclient.grpc.aio``), following docs/triton-io-contract.md.

Streaming models are called with ``stream_infer`` (one request per gRPC stream, empty FINAL response
enabled); closing the async iterator returned by :meth:`TritonEngine.stream` cancels the gRPC call, which
cancels the request inside Triton. Errors are mapped by :func:`classify_error`: errors inside a stream
carry only a message (no status code), so the message is inspected too.

Sessions (:class:`TritonSession`) use one gRPC stream per session on the ``*_session`` models, every
request naming its session (``session_id``): the START request (``session_start``) carries the voice and
answers with all the session's audio; each later request carries a text fragment and is acknowledged by one
empty FINAL response. At most one text request is in flight: fragments that arrive meanwhile are joined into
the next request, so a fast token stream costs the server a request per round trip rather than one per
token.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult
from tritonclient.utils import InferenceServerException

from qwen3_tts_serving import contract
from qwen3_tts_serving.contract import ErrorKind, has_outputs, is_final

from ..errors import (
    EngineError,
    EngineFailureError,
    EngineInvalidRequestError,
    EngineUnavailableError,
    UpstreamTimeoutError,
)
from .base import (
    VOICE_PROMPT_MODEL,
    AudioChunk,
    SamplingParams,
    SessionRequest,
    SynthesisRequest,
    VoicePrompt,
)

logger = logging.getLogger(__name__)

_MAX_MESSAGE_CHARS = 300
_INITIAL_RECONNECT_MS = 1000  # gRPC's default first reconnect backoff


class StreamCancelledError(EngineError):
    status_code = 499
    error_type = "cancelled"


def _short(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "error"
    return line[:_MAX_MESSAGE_CHARS]


def classify_error(message: str, code: Any = None) -> EngineError:
    """Map a Triton/gRPC error to a gateway error (its ``kind`` set); the meaning comes from the contract's
    one classifier."""
    kind = contract.classify_error(message, code)
    error = _gateway_error(kind, message, code)
    error.kind = kind
    return error


def _gateway_error(kind: ErrorKind, message: str, code: Any) -> EngineError:
    if kind is ErrorKind.INVALID:
        return EngineInvalidRequestError(_short(message))
    if kind is ErrorKind.TIMEOUT:
        return UpstreamTimeoutError("the model server did not answer in time")
    if kind is ErrorKind.CANCELLED:
        return StreamCancelledError("request cancelled")
    if kind is ErrorKind.OUT_OF_MEMORY:
        return EngineUnavailableError("the model server is out of memory; retry later")
    if kind is ErrorKind.OVERLOADED:
        return EngineUnavailableError("the model server is overloaded; retry later")
    if kind is ErrorKind.INTERNAL:
        logger.error("model server failure (%s): %s", contract.status_name(code), message)
        return EngineFailureError("synthesis failed in the model server")
    # CONNECT, NOT_FOUND (a model not loaded), UNAVAILABLE: the server cannot serve it now.
    return EngineUnavailableError("the model server is unavailable; retry later")


def _from_exception(exc: BaseException) -> EngineError:
    if isinstance(exc, grpc.aio.AioRpcError):
        return classify_error(exc.details() or "", exc.code())
    if isinstance(exc, InferenceServerException):
        return classify_error(exc.message() or str(exc), exc.status())
    logger.exception("unexpected error talking to Triton", exc_info=exc)
    return EngineUnavailableError("the model server is unavailable; retry later")


def _inputs(fields: dict[str, Any]) -> list[InferInput]:
    inputs = []
    for name, datatype, array in contract.request_arrays(fields):
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def sampling_fields(sampling: SamplingParams) -> dict[str, Any]:
    return {name: getattr(sampling, name) for name in contract.SAMPLING_INPUTS}


def prompt_fields(prompt: VoicePrompt) -> dict[str, Any]:
    """A stored prompt: in-context (codes + transcript) when it has both, else x-vector only."""
    codes = np.asarray(prompt.ref_codes, dtype=np.int64).reshape(-1, contract.CODE_GROUPS)
    in_context = not prompt.x_vector_only and codes.shape[0] > 0 and bool(prompt.ref_text)
    return {
        "speaker_embedding": prompt.speaker_embedding,
        "x_vector_only": not in_context,
        "ref_codes": codes if in_context else None,
        "ref_text": prompt.ref_text if in_context else None,
    }


def reference_fields(audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
    return {"ref_audio": audio, "ref_sample_rate": sample_rate}


def synthesis_fields(request: SynthesisRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "text": request.text,
        "language": request.language,
        "speaker": request.speaker,
        "instruct": request.instruct or None,
    }
    if request.voice_prompt is not None:
        fields.update(prompt_fields(request.voice_prompt))
    elif request.ref_audio is not None and request.ref_sample_rate is not None:
        fields.update(reference_fields(request.ref_audio, request.ref_sample_rate))
        fields.update(ref_text=request.ref_text or None, x_vector_only=request.x_vector_only)
    return {**fields, **sampling_fields(request.sampling)}


def build_inputs(request: SynthesisRequest) -> list[InferInput]:
    """The Triton inputs of one synthesis request (batch dimension 1)."""
    return _inputs(synthesis_fields(request))


def session_fields(session_id: int, *, start: bool = False, end: bool = False) -> dict[str, Any]:
    """Which session a request belongs to and whether it opens or closes it (absent flags: false)."""
    return {
        "session_id": session_id,
        "session_start": True if start else None,
        "session_end": True if end else None,
    }


def session_start_inputs(request: SessionRequest, session_id: int) -> list[InferInput]:
    """The START request of a session: a streaming request's inputs (text may be empty) + lookahead."""
    return _inputs(
        {
            **session_fields(session_id, start=True),
            **synthesis_fields(request.synthesis),
            "lookahead_tokens": request.lookahead_tokens,
        }
    )


def session_text_inputs(session_id: int, text: str, flush: bool, *, end: bool) -> list[InferInput]:
    return _inputs({**session_fields(session_id, end=end), "text": text, "flush": True if flush else None})


def new_session_id() -> int:
    """A random non-zero uint64 session id (63 bits: also safe where it is read as signed); random rather
    than counted, so that several gateways can share one Triton and no client can guess another's."""
    return secrets.randbelow(2**63 - 1) + 1


def parse_chunk(result: InferResult) -> AudioChunk:
    try:
        chunk = contract.parse_chunk(result.as_numpy)
    except contract.MissingOutputError as error:
        raise EngineFailureError(str(error)) from None
    return AudioChunk(
        audio=chunk.audio,
        sample_rate=chunk.sample_rate,
        sequence=chunk.sequence,
        is_last=chunk.is_last,
        finish_reason=chunk.finish_reason,
    )


def response_id(result: InferResult) -> str:
    return result.get_response().id


class TritonSession:
    """One text-streaming session over one gRPC stream (see the module docstring).

    Errors inside a gRPC stream carry no request id, so an error before the last chunk ends the session
    (the gateway checks text limits itself, so the fragments' own errors do not occur then); errors after
    it answer text that raced the end and are only logged.
    """

    def __init__(self, client: grpcclient.InferenceServerClient, request: SessionRequest) -> None:
        session_number = new_session_id()
        self.session_id = f"{session_number:016x}"
        self._model = request.model
        self._session_number = session_number
        self._start_id = f"{self.session_id}-0"
        self._requests = 0
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pending = ""
        self._pending_flush = False
        self._ending = False
        self._in_flight: str | None = None
        self._finished = False
        self._stream_done = False
        self._closed = False
        self._iterated = False
        self._send(session_start_inputs(request, session_number), self._start_id)
        self._responses = client.stream_infer(self._request_iterator(), stream_timeout=None)

    # -------------------------------------------------------------------------------------- input

    def _send(self, inputs: list[InferInput], request_id: str) -> None:
        self._outbox.put_nowait(
            {
                "model_name": self._model,
                "inputs": inputs,
                "request_id": request_id,
                "parameters": {"triton_enable_empty_final_response": True},
            }
        )

    async def _request_iterator(self) -> AsyncIterator[dict[str, Any]]:
        while (request := await self._outbox.get()) is not None:
            yield request

    def _check_open(self) -> None:
        if self._finished or self._closed:
            raise EngineInvalidRequestError("the session has ended")
        if self._ending:
            raise EngineInvalidRequestError("the session's input is closed")

    async def send_text(self, text: str, *, flush: bool = False) -> None:
        self._check_open()
        self._pending += text
        self._pending_flush = self._pending_flush or flush
        self._pump()

    async def end(self, text: str = "") -> None:
        self._check_open()
        self._pending += text
        self._ending = True
        self._pump()

    def _pump(self) -> None:
        """Send what is pending unless a text request still waits for its acknowledgement."""
        if self._in_flight is not None or self._finished or self._closed:
            return
        if not (self._pending or self._pending_flush or self._ending):
            return
        self._requests += 1
        self._in_flight = f"{self.session_id}-{self._requests}"
        inputs = session_text_inputs(
            self._session_number, self._pending, self._pending_flush, end=self._ending
        )
        self._send(inputs, self._in_flight)
        if self._ending:
            self._outbox.put_nowait(None)  # END sent: half-close the stream, responses keep coming
        self._pending, self._pending_flush = "", False

    # -------------------------------------------------------------------------------------- output

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        if self._iterated:
            raise RuntimeError("a session's audio can be iterated once")
        self._iterated = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioChunk]:
        try:
            async for result, error in self._responses:
                if error is not None:
                    self._on_error(error)
                    continue
                if response_id(result) != self._start_id:
                    self._on_acknowledgement(result)
                    continue
                if has_outputs(result):
                    chunk = parse_chunk(result)
                    self._finished = self._finished or chunk.is_last
                    yield chunk
                if is_final(result):
                    break
            else:
                self._stream_done = True
            if not self._finished:
                raise EngineFailureError("the session ended without its last chunk")
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            raise _from_exception(exc) from None
        finally:
            await self.aclose()

    def _on_error(self, error: InferenceServerException) -> None:
        message = error.message() or str(error)
        if not self._finished and contract.NO_OPEN_SESSION in message:
            # Text that raced the session's end on the engine (an idle timeout): the engine refused it, and
            # the session's last chunk is on its way. Ending the session here would turn its reason
            # (idle_timeout) into an error.
            logger.info("session %s: text raced its end: %s", self.session_id, _short(message))
            self._in_flight = None
            return
        if not self._finished:
            raise _from_exception(error)
        logger.info("session %s: text after the end was refused: %s", self.session_id, _short(str(error)))

    def _on_acknowledgement(self, result: InferResult) -> None:
        if response_id(result) == self._in_flight and is_final(result):
            self._in_flight = None
            self._pump()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._stream_done:
            if not self._finished:
                logger.info("cancelling session %s (%s)", self.session_id, self._model)
            self._responses.cancel()
        self._outbox.put_nowait(None)


def channel_args(reconnect_max_s: float) -> list[tuple[str, int]]:
    """tritonclient's default channel options, and reconnect attempts at most ``reconnect_max_s`` apart.

    gRPC's own backoff grows to 120 s: after an outage of a minute or two (a restarted server loading its
    models) the gateway would go on answering 503 for up to that long after Triton is back.
    """
    keepalive = grpcclient.KeepAliveOptions()
    reconnect_ms = max(1, int(reconnect_max_s * 1000))
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", min(_INITIAL_RECONNECT_MS, reconnect_ms)),
        ("grpc.min_reconnect_backoff_ms", min(_INITIAL_RECONNECT_MS, reconnect_ms)),
        ("grpc.max_reconnect_backoff_ms", reconnect_ms),
    ]


class TritonEngine:
    """Talks to Triton over gRPC; the client is created lazily inside the running event loop."""

    def __init__(
        self, url: str, timeout_s: float, reconnect_max_s: float = 2.0, stall_s: float | None = None
    ) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._stall_s = stall_s
        self._reconnect_max_s = reconnect_max_s
        self._client: grpcclient.InferenceServerClient | None = None

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(
                self._url, channel_args=channel_args(self._reconnect_max_s)
            )
        return self._client

    async def ready(self, timeout_s: float = 5.0, *, log: bool = True) -> bool:
        """``log=False``: a poller that logs changes itself."""
        try:
            return bool(await self.client.is_server_ready(client_timeout=timeout_s))
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            if log:
                logger.warning("Triton not ready at %s: %s", self._url, _short(str(exc)))
            return False

    async def model_ready(self, name: str) -> bool:
        try:
            return bool(await self.client.is_model_ready(name, client_timeout=5.0))
        except (InferenceServerException, grpc.aio.AioRpcError):
            return False

    @property
    def url(self) -> str:
        return self._url

    async def model_states(self, timeout_s: float = 5.0) -> dict[str, bool] | None:
        """Each model of the contract in the server's repository, and whether it is ready (one call);
        None when the server cannot say."""
        try:
            index = await self.client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
        except (InferenceServerException, grpc.aio.AioRpcError):
            return None
        states = {model.get("name"): model.get("state") == "READY" for model in index.get("models", [])}
        return {name: states[name] for name in contract.MODELS if name in states}

    async def served_models(self) -> tuple[str, ...]:
        try:
            index = await self.client.get_model_repository_index(as_json=True, client_timeout=5.0)
        except (InferenceServerException, grpc.aio.AioRpcError):
            return contract.MODELS
        names = {model.get("name") for model in index.get("models", [])}
        return tuple(name for name in contract.MODELS if name in names) or contract.MODELS

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
        started = False
        try:
            while True:
                try:
                    # Before the first chunk the request may wait in the server's queue; once audio flows,
                    # silence longer than the stall limit means the server hung or lost the stream.
                    stall_s = self._stall_s if started else None
                    result, error = await asyncio.wait_for(anext(responses), stall_s)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    logger.warning("%s sent nothing for %g s mid-stream", self._url, self._stall_s)
                    stalled = EngineUnavailableError("the model server stopped mid-stream; retry")
                    stalled.kind = ErrorKind.UNAVAILABLE
                    raise stalled from None
                started = True
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

    async def open_session(self, request: SessionRequest) -> TritonSession:
        return TritonSession(self.client, request)

    async def create_voice_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None, x_vector_only: bool
    ) -> VoicePrompt:
        inputs = _inputs(
            {
                **reference_fields(audio, sample_rate),
                "ref_text": ref_text or None,
                "x_vector_only": x_vector_only,
            }
        )
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
            ref_codes=np.asarray(codes, dtype=np.int64).reshape(-1, contract.CODE_GROUPS),
            ref_text=ref_text or None,
            x_vector_only=x_vector_only,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
