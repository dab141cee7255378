"""Direct client of the Triton models, for callers who bypass the gateway (docs/triton-io-contract.md).

Each synthesis opens its own gRPC stream (``start_stream`` → ``async_stream_infer`` with the empty
FINAL response enabled → read until the FINAL flag → ``stop_stream``): a tritonclient stream carries
one callback, and one stream per request keeps concurrent calls from different threads independent.
Errors are raised as the same exception classes the gateway client uses, with the status the gateway
would have answered (INVALID_ARG → 422; out of memory, overload, shutting down or a model not loaded →
503; deadline → 504; the model failed → 502), and retried as the gateway client retries them (connection
errors, 5xx; a stream only before its first chunk), honouring the same ``RetryPolicy``.
"""

from __future__ import annotations

import logging
import os
import queue
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen3_tts_serving import contract
from qwen3_tts_serving.contract import ErrorKind, has_outputs, is_final

from ._core import AudioInput, audio_bytes, resolve_retry_policy, sampling_fields
from .audio import decode_audio
from .errors import (
    APIConnectionError,
    APITimeoutError,
    BadGatewayError,
    GatewayTimeoutError,
    InternalServerError,
    Qwen3TTSError,
    RequestInfo,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from .retry import RetryPolicy, RetryState
from .streams import ChunkStream
from .types import AudioChunk

if TYPE_CHECKING:
    import tritonclient.grpc as grpcclient
    from typing_extensions import Unpack

    from .types import SamplingOptions

__all__ = ["ENV_TRITON_URL", "TritonTTSClient", "VoicePrompt", "build_inputs", "parse_result", "triton_error"]

logger = logging.getLogger(__name__)

ENV_TRITON_URL = "QWEN3_TTS_TRITON_URL"
DEFAULT_TRITON_URL = "127.0.0.1:8001"
CODEBOOKS = contract.CODE_GROUPS


@dataclass(frozen=True)
class VoicePrompt:
    """What ``voice_prompt`` returns: reuse it with ``stream_clone(voice_prompt=...)``."""

    speaker_embedding: np.ndarray  # float32 [D]
    ref_codes: np.ndarray  # int64 [T, 16]; T == 0 in x-vector-only mode
    ref_text: str | None = None


# ------------------------------------------------------------------------------------------ tensors


def tensor(name: str, value: Any) -> np.ndarray:
    """The batch-of-one array for input ``name`` per the contract's dtype and shape."""
    return contract.INPUTS[name].array(value)


def build_inputs(fields: Mapping[str, Any]) -> list[grpcclient.InferInput]:
    """InferInputs for the non-None ``fields`` (names from the contract; unknown names raise)."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, datatype, array in contract.request_arrays(fields):
        infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    return inputs


def parse_result(result: Any) -> AudioChunk:
    """A streamed ``InferResult`` → AudioChunk (audio float32 mono)."""
    try:
        chunk = contract.parse_chunk(result.as_numpy)
    except contract.MissingOutputError as error:
        raise InternalServerError(str(error), status_code=500) from None
    return AudioChunk(
        sequence=chunk.sequence,
        audio=chunk.audio,
        sample_rate=chunk.sample_rate,
        is_last=chunk.is_last,
        finish_reason=chunk.finish_reason or None,
        data=chunk.audio.astype("<f4").tobytes(),
        format="f32le",
    )


def triton_error(error: BaseException) -> Qwen3TTSError:
    """Map a tritonclient error to the client's classes, by the contract's one classifier (the status
    the gateway would have answered)."""
    status = getattr(error, "status", lambda: None)()
    message_of = getattr(error, "message", None)
    message = (message_of() if callable(message_of) else None) or str(error)
    kind = contract.classify_error(message, status)
    if kind is ErrorKind.CONNECT:
        return APIConnectionError(f"could not reach Triton: {message}")
    if kind is ErrorKind.INVALID:
        return UnprocessableEntityError(message, status_code=422)
    if kind is ErrorKind.TIMEOUT:
        return GatewayTimeoutError(message, status_code=504)
    if kind in contract.RETRYABLE or kind is ErrorKind.NOT_FOUND:
        # NOT_FOUND: the model is not loaded on that server (being unloaded, or never), as the gateway reads
        # it; the model names are the contract's, never the caller's.
        return ServiceUnavailableError(message, status_code=503)
    if kind is ErrorKind.INTERNAL:
        return BadGatewayError(message, status_code=502)
    return InternalServerError(message, status_code=500)  # CANCELLED by the server


def _decoded(reference_audio: AudioInput) -> tuple[np.ndarray, int]:
    if isinstance(reference_audio, tuple):
        samples, sample_rate = reference_audio
        return np.asarray(samples, dtype=np.float32).reshape(-1), int(sample_rate)
    return decode_audio(audio_bytes(reference_audio))


# ------------------------------------------------------------------------------------------ client


class TritonTTSClient:
    """Streams from the Triton models over gRPC. ``url`` is ``host:port`` (default
    ``QWEN3_TTS_TRITON_URL`` or 127.0.0.1:8001); ``timeout_s`` bounds each wait for a response.
    ``max_retries`` (default 2) or a ``retry_policy``, not both, as in ``Qwen3TTSClient``: a stream is
    retried only until its first chunk (audio already handed over cannot be taken back)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_s: float = 120.0,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        verbose: bool = False,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.url = url or os.environ.get(ENV_TRITON_URL) or DEFAULT_TRITON_URL
        self.timeout_s = timeout_s
        self.retry_policy = resolve_retry_policy(retry_policy, max_retries)
        self._verbose = verbose
        self._client = grpcclient.InferenceServerClient(self.url, verbose=verbose)

    # ---------------------------------------------------------------------------------- status

    def is_ready(self, model: str | None = None) -> bool:
        """Server ready (and ``model`` loaded, when given); False rather than raising when down."""
        from tritonclient.utils import InferenceServerException

        try:
            if model is None:
                return bool(self._client.is_server_ready(client_timeout=5.0))
            return bool(self._client.is_model_ready(model, client_timeout=5.0))
        except InferenceServerException as exc:
            logger.info("Triton at %s not ready: %s", self.url, exc)
            return False

    # ---------------------------------------------------------------------------------- synthesis

    def stream(
        self,
        text: str,
        *,
        speaker: str,
        language: str = "auto",
        instruct: str | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> ChunkStream:
        """``custom_voice``: one of the nine timbres, optionally with a style instruction."""
        fields = {"text": text, "speaker": speaker, "language": language, "instruct": instruct}
        return self._stream("custom_voice", {**fields, **sampling_fields(sampling)})

    def stream_design(
        self, text: str, *, instruct: str, language: str = "auto", **sampling: Unpack[SamplingOptions]
    ) -> ChunkStream:
        """``voice_design``: a voice described in words."""
        fields = {"text": text, "instruct": instruct, "language": language}
        return self._stream("voice_design", {**fields, **sampling_fields(sampling)})

    def stream_clone(
        self,
        text: str,
        *,
        reference_audio: AudioInput | None = None,
        voice_prompt: VoicePrompt | None = None,
        ref_text: str | None = None,
        x_vector_only: bool | None = None,
        language: str = "auto",
        **sampling: Unpack[SamplingOptions],
    ) -> ChunkStream:
        """``voice_clone``: from a reference clip, or from a prompt made once by ``voice_prompt``."""
        fields: dict[str, Any] = {"text": text, "language": language}
        if voice_prompt is not None:
            fields["speaker_embedding"] = voice_prompt.speaker_embedding
            codes = np.asarray(voice_prompt.ref_codes).reshape(-1, CODEBOOKS)
            prompt_text = ref_text or voice_prompt.ref_text
            if codes.shape[0] > 0 and prompt_text and not x_vector_only:
                fields.update(ref_codes=codes, ref_text=prompt_text)
        elif reference_audio is not None:
            samples, sample_rate = _decoded(reference_audio)
            fields.update(ref_audio=samples, ref_sample_rate=sample_rate, ref_text=ref_text)
        else:
            raise ValueError("stream_clone needs reference_audio or voice_prompt")
        fields["x_vector_only"] = x_vector_only
        return self._stream("voice_clone", {**fields, **sampling_fields(sampling)})

    def voice_prompt(
        self, reference_audio: AudioInput, *, ref_text: str | None = None, x_vector_only: bool = False
    ) -> VoicePrompt:
        """Run ``voice_prompt`` once to get a reusable clone prompt."""
        from tritonclient.utils import InferenceServerException

        samples, sample_rate = _decoded(reference_audio)
        fields = {
            "ref_audio": samples,
            "ref_sample_rate": sample_rate,
            "ref_text": ref_text,
            "x_vector_only": x_vector_only,
        }
        outputs = [self._grpc.InferRequestedOutput(name) for name in ("speaker_embedding", "ref_codes")]
        inputs = build_inputs(fields)
        state = RetryState(self.retry_policy)  # idempotent: a prompt is computed, nothing is stored
        while True:
            try:
                try:
                    result = self._client.infer(
                        "voice_prompt", inputs, outputs=outputs, client_timeout=self.timeout_s
                    )
                except InferenceServerException as exc:
                    raise self._error(triton_error(exc), "voice_prompt", state) from exc
                break
            except Qwen3TTSError as error:
                time.sleep(state.next_delay(error))
        embedding, codes = result.as_numpy("speaker_embedding"), result.as_numpy("ref_codes")
        if embedding is None or codes is None:
            raise InternalServerError("voice_prompt returned no prompt", status_code=500)
        return VoicePrompt(
            speaker_embedding=np.asarray(embedding, dtype=np.float32).reshape(-1),
            ref_codes=np.asarray(codes, dtype=np.int64).reshape(-1, CODEBOOKS),
            ref_text=ref_text,
        )

    def _stream(self, model: str, fields: Mapping[str, Any]) -> ChunkStream:
        return ChunkStream(self._responses(model, build_inputs(fields)))

    def _error(self, error: Qwen3TTSError, model: str, state: RetryState) -> Qwen3TTSError:
        error.request = RequestInfo(operation=model, method="gRPC", url=self.url, attempt=state.retries)
        return error

    def _responses(self, model: str, inputs: list[Any]) -> Generator[AudioChunk, None, None]:
        state = RetryState(self.retry_policy)
        while True:
            attempt = self._attempt(model, inputs, state)
            try:
                try:
                    first = next(attempt)
                except StopIteration:
                    return
                except Qwen3TTSError as error:  # nothing handed over yet: another try is safe
                    time.sleep(state.next_delay(error))
                    continue
                yield first
                yield from attempt
                return
            finally:
                attempt.close()

    def _attempt(self, model: str, inputs: list[Any], state: RetryState) -> Generator[AudioChunk, None, None]:
        # Results arrive on tritonclient's thread; a queue hands them to the consumer's thread.
        results: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue()
        client = self._grpc.InferenceServerClient(self.url, verbose=self._verbose)
        finished = False
        try:
            try:
                self._start(client, model, inputs, results)
                while not finished:
                    result, error = self._next(results)
                    if error is not None:
                        raise triton_error(error) from error
                    finished = is_final(result)
                    if has_outputs(result):
                        yield parse_result(result)
            except Qwen3TTSError as error:
                self._error(error, model, state)
                raise
        finally:
            # Stopping early (consumer broke out, error) cancels the request inside Triton.
            client.stop_stream(cancel_requests=not finished)
            client.close()

    @staticmethod
    def _start(client: Any, model: str, inputs: list[Any], results: queue.Queue[Any]) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            client.start_stream(callback=lambda result, error: results.put((result, error)))
            client.async_stream_infer(
                model, inputs, request_id=uuid.uuid4().hex, enable_empty_final_response=True
            )
        except InferenceServerException as exc:
            # "The stream is no longer in valid state": the real cause went to the callback.
            try:
                _, cause = results.get(timeout=1.0)
            except queue.Empty:
                cause = None
            raise triton_error(cause or exc) from exc

    def _next(
        self, results: queue.Queue[tuple[Any, BaseException | None]]
    ) -> tuple[Any, BaseException | None]:
        try:
            return results.get(timeout=self.timeout_s)
        except queue.Empty:
            raise APITimeoutError(
                f"no response from Triton at {self.url} within {self.timeout_s:g}s"
            ) from None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonTTSClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
