"""Synchronous client of the Qwen3-TTS gateway.

Every method builds an :class:`~._core.Operation` with the shared builders and runs it through
``_call``; the retry loop below is the only I/O-specific code (its async twin lives in
``async_client.py``, the policy in :class:`~.retry.RetryState`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ._core import (
    DEFAULT_TIMEOUT_S,
    AudioInput,
    ClientCore,
    Operation,
    StreamState,
    TimeoutLike,
    clone_op,
    create_voice_op,
    delete_voice_op,
    design_op,
    get_voice_op,
    health_op,
    languages_op,
    list_voices_op,
    ready_op,
    speak_op,
    speakers_op,
    stream_op,
)
from .errors import APIStatusError, Qwen3TTSError
from .retry import RetryPolicy, RetryState
from .session import SpeechSession, session_start, websocket_url
from .streams import ChunkStream
from .types import AudioChunk, HealthStatus, Language, Speaker, SpeechResult, Voice

if TYPE_CHECKING:  # Unpack is 3.11+; typing_extensions has it for 3.10
    from typing_extensions import Unpack

    from .types import SamplingOptions

__all__ = ["Qwen3TTSClient"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Qwen3TTSClient:
    """Talks to the gateway over HTTP; thread-safe (httpx.Client is), reuse one per process.

    ``base_url``/``api_key`` default to ``QWEN3_TTS_BASE_URL``/``QWEN3_TTS_API_KEY``. ``timeout`` is
    seconds per request (or an ``httpx.Timeout``); ``max_retries`` (default 2) retries 408/429/5xx and
    connection errors with backoff, honouring Retry-After. ``retry_policy`` (a :class:`~.retry.RetryPolicy`)
    sets the count and the backoff together: give it or ``max_retries``, not both (``ValueError``).
    ``http_client`` is an optional httpx client of your own (proxies, transports); it is not closed by
    ``close()``.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: TimeoutLike = DEFAULT_TIMEOUT_S,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._core = ClientCore(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            headers=headers,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(**self._core.http_client_options())

    @property
    def base_url(self) -> str:
        return self._core.base_url

    # ------------------------------------------------------------------------------------ plumbing

    def _send_once(self, op: Operation[Any], *, stream: bool) -> httpx.Response:
        request = self._http.build_request(**self._core.request_options(op))
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise self._core.connection_error(exc) from exc
        logger.debug("%s %s -> %d", op.method, op.path, response.status_code)
        if self._core.is_failure(op, response):
            raise self._failure(response)
        return response

    def _failure(self, response: httpx.Response) -> APIStatusError:
        """The error for a failed response, read to its end (a streamed one is not read yet)."""
        body = bytearray()
        try:
            for part in response.iter_bytes():
                body += part
        except httpx.RequestError as exc:
            logger.debug("the error body of %s was cut short: %r", response.status_code, exc)
            return self._core.status_error(response, bytes(body), cut_short=True)
        finally:
            response.close()
        return self._core.status_error(response, bytes(body))

    def _send(self, op: Operation[Any], state: RetryState, *, stream: bool = False) -> httpx.Response:
        while True:
            try:
                return self._send_once(op, stream=stream)
            except Qwen3TTSError as error:
                self._core.tag(error, op, state.retries)
                time.sleep(state.next_delay(error))

    def _call(self, op: Operation[T]) -> T:
        state = self._core.retry_state(op)
        response = self._send(op, state)
        try:
            return op.parse(response)
        except Qwen3TTSError as error:
            self._core.tag(error, op, state.retries)
            raise

    def _chunks(self, op: Operation[Any]) -> Generator[AudioChunk, None, None]:
        retries = self._core.retry_state(op)
        response = self._send(op, retries, stream=True)
        state = StreamState()
        try:
            yield from state.feed(response.iter_lines())
            state.finish()
        except httpx.TransportError as exc:
            raise self._core.tag(self._core.stream_cut_error(exc, state.count), op, retries.retries) from exc
        except Qwen3TTSError as error:
            self._core.tag(error, op, retries.retries)
            raise
        finally:
            response.close()

    # ------------------------------------------------------------------------------------ synthesis

    def speak(
        self,
        text: str,
        *,
        voice: str | None = None,
        speaker: str | None = None,
        language: str | None = None,
        instruct: str | None = None,
        response_format: str | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> SpeechResult:
        """The whole file for ``text``: ``voice`` is a timbre or ``qwen3-clone-<id>`` (``speaker``: a
        timbre only); ``response_format`` wav (default), flac, mp3, opus or pcm (s16le)."""
        return self._call(
            speak_op(
                text,
                voice=voice,
                speaker=speaker,
                language=language,
                instruct=instruct,
                response_format=response_format,
                sampling=sampling,
            )
        )

    def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        speaker: str | None = None,
        language: str | None = None,
        instruct: str | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> ChunkStream:
        """Chunks as they are generated (``AudioChunk.audio`` float32, ``.pcm16()`` bytes)."""
        op = stream_op(
            text, voice=voice, speaker=speaker, language=language, instruct=instruct, sampling=sampling
        )
        return ChunkStream(self._chunks(op))

    def session(
        self,
        *,
        voice: str,
        language: str | None = None,
        instruct: str | None = None,
        text: str | None = None,
        format: str = "pcm",
        lookahead_tokens: int | None = None,
        json_chunks: bool = False,
        **sampling: Unpack[SamplingOptions],
    ) -> SpeechSession:
        """A voice-agent session (``/ws/session``): ``with client.session(...) as s``,
        ``s.send_text(fragment)`` as text comes, ``s.end()``, and iterate the audio.

        ``voice``: a timbre or ``qwen3-clone-<id>``; ``format``: pcm (chunks carry float samples), wav,
        mp3 or opus (chunks carry the encoded bytes in ``data``); ``lookahead_tokens`` (0-64) trades
        first-audio latency for prosody. Needs the ``websockets`` package.
        """
        start = session_start(
            voice=voice,
            language=language,
            instruct=instruct,
            text=text,
            format=format,
            lookahead_tokens=lookahead_tokens,
            json_chunks=json_chunks,
            sampling=sampling,
        )
        return SpeechSession(websocket_url(self.base_url), start, **self._core.session_options())

    def clone(
        self,
        text: str,
        *,
        reference_audio: AudioInput,
        ref_text: str | None = None,
        x_vector_only: bool | None = None,
        language: str | None = None,
        response_format: str | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> SpeechResult:
        """Speak ``text`` in the voice of a reference clip (one-off; see ``create_voice`` to reuse)."""
        return self._call(
            clone_op(
                text,
                reference_audio=reference_audio,
                ref_text=ref_text,
                x_vector_only=x_vector_only,
                language=language,
                response_format=response_format,
                sampling=sampling,
            )
        )

    def design(
        self,
        text: str,
        *,
        instruct: str,
        language: str | None = None,
        response_format: str | None = None,
        **sampling: Unpack[SamplingOptions],
    ) -> SpeechResult:
        """Speak ``text`` in a voice described in words by ``instruct``."""
        return self._call(
            design_op(
                text, instruct=instruct, language=language, response_format=response_format, sampling=sampling
            )
        )

    # ------------------------------------------------------------------------------------ voice library

    def create_voice(
        self,
        reference_audio: AudioInput,
        *,
        ref_text: str | None = None,
        name: str | None = None,
        x_vector_only: bool | None = None,
    ) -> Voice:
        """Save a voice from a reference clip (+ transcript); use ``voice.model_id`` as the speaker."""
        return self._call(
            create_voice_op(
                reference_audio=reference_audio, ref_text=ref_text, name=name, x_vector_only=x_vector_only
            )
        )

    def list_voices(self) -> list[Voice]:
        return self._call(list_voices_op())

    def get_voice(self, voice_id: str) -> Voice:
        return self._call(get_voice_op(voice_id))

    def delete_voice(self, voice_id: str) -> None:
        self._call(delete_voice_op(voice_id))

    # ------------------------------------------------------------------------------------ catalog

    def speakers(self) -> list[Speaker]:
        return self._call(speakers_op())

    def languages(self) -> list[Language]:
        return self._call(languages_op())

    def health(self) -> HealthStatus:
        """Liveness of the gateway (GET /health)."""
        return self._call(health_op())

    def ready(self) -> HealthStatus:
        """Readiness of the gateway, Triton and every model (GET /ready); not ready → ``ok`` False."""
        return self._call(ready_op())

    # ------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Qwen3TTSClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
