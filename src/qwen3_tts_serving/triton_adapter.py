"""The thin layer between Triton's Python backend and the engine, shared by every model.py.

Only this module touches ``triton_python_backend_utils``; it exists inside the Triton stub only. It turns
Triton requests into ``SynthesisRequest`` objects, hands each entry batch to the engine in one call, and
sends the engine's chunks back on each request's decoupled response sender. Every request ends with the
FINAL flag, after its last chunk or after its error response.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from .contract import PROMPT_OUTPUTS, SAMPLING_INPUTS, chunk_arrays
from .engine.config import EngineConfig
from .engine.observer import EngineTally, TallySnapshot
from .engine.requests import (
    Capability,
    EngineUnavailableError,
    GenerationFaultError,
    InvalidRequestError,
    SynthesisRequest,
)
from .engine.streams import AudioChunk

# Python type of each sampling input, from the contract's datatypes.
_SAMPLING_INPUTS = {
    name: {"BOOL": bool, "FP32": float}.get(spec.datatype, int) for name, spec in SAMPLING_INPUTS.items()
}

_log = logging.getLogger(__name__)
_DRAINING = "the model server is shutting down; retry"
_DRAIN_POLL_S = 0.05


def model_parameters(args: dict[str, Any]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def engine_config(args: dict[str, Any]) -> EngineConfig:
    try:
        return EngineConfig.from_parameters(model_parameters(args))
    except ValueError as error:
        raise pb_utils.TritonModelException(f"bad model parameters: {error}") from None


def triton_error(error: Exception) -> Any:
    if isinstance(error, InvalidRequestError | ValueError):
        return pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
    if isinstance(error, EngineUnavailableError):
        return pb_utils.TritonError(str(error), pb_utils.TritonError.UNAVAILABLE)
    if isinstance(error, GenerationFaultError):  # its message is short and safe to show
        return pb_utils.TritonError(str(error), pb_utils.TritonError.INTERNAL)
    return pb_utils.TritonError("internal error", pb_utils.TritonError.INTERNAL)


# -------------------------------------------------------------------------------------------- metrics
# Seconds from entering the engine's queue to the first audio leaving it (the engine's share of TTFA).
_FIRST_AUDIO_BUCKETS = [0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0]


class EngineMetrics:
    """The engine's figures on Triton's metrics endpoint (``--metrics-port``), labelled by model.

    ``qwen3_tts_active_streams`` / ``_queued_streams`` / ``_paused_sessions`` (gauges), ``_steps_total``,
    ``_frames_total``, ``_step_seconds_total`` (counters: their rates give frames per second and the mean
    step time), ``_first_audio_seconds`` (histogram) and ``_finished_total{reason}``.
    """

    def __init__(self, model: str) -> None:
        family = pb_utils.MetricFamily
        self._labels = {"model": model}
        self._families: list[Any] = []  # a family must outlive its metrics

        def metric(name: str, description: str, kind: Any, **options: Any) -> Any:
            created = family(name=name, description=description, kind=kind)
            self._families.append(created)
            return created.Metric(labels=self._labels, **options)

        self.active = metric("qwen3_tts_active_streams", "Streams stepping in the engine", family.GAUGE)
        self.queued = metric("qwen3_tts_queued_streams", "Requests waiting for an engine slot", family.GAUGE)
        self.paused = metric("qwen3_tts_paused_sessions", "Sessions waiting for text", family.GAUGE)
        self.steps = metric("qwen3_tts_steps_total", "Engine steps (a frame per stream)", family.COUNTER)
        self.frames = metric("qwen3_tts_frames_total", "Codec frames generated (80 ms each)", family.COUNTER)
        self.step_seconds = metric("qwen3_tts_step_seconds_total", "Time in engine steps", family.COUNTER)
        self.first_audio = metric(
            "qwen3_tts_first_audio_seconds",
            "From entering the engine queue to the first audio chunk",
            family.HISTOGRAM,
            buckets=_FIRST_AUDIO_BUCKETS,
        )
        self._finished_family = family(
            name="qwen3_tts_finished_total", description="Streams ended, by reason", kind=family.COUNTER
        )
        self._finished: dict[str, Any] = {}

    def publish(self, snapshot: TallySnapshot) -> None:
        self.active.set(snapshot.active)
        self.queued.set(snapshot.queued)
        self.paused.set(snapshot.paused)
        if snapshot.steps:
            self.steps.increment(snapshot.steps)
            self.frames.increment(snapshot.frames)
            self.step_seconds.increment(snapshot.step_seconds)
        for seconds in snapshot.first_audio_seconds:
            self.first_audio.observe(seconds)
        for reason, count in snapshot.finished.items():
            if reason not in self._finished:
                labels = {**self._labels, "reason": reason or "unknown"}
                self._finished[reason] = self._finished_family.Metric(labels=labels)
            self._finished[reason].increment(count)


# ------------------------------------------------------------------------------------- reading inputs
def _tensor(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _scalar(request: Any, name: str) -> Any:
    array = _tensor(request, name)
    if array is None:
        return None
    if array.size != 1:
        raise InvalidRequestError(f"{name} must hold exactly one value, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def _string(request: Any, name: str) -> str | None:
    value = _scalar(request, name)
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(f"{name} is not valid UTF-8") from None
    return str(value)


def _vector(request: Any, name: str, dtype: type) -> np.ndarray | None:
    array = _tensor(request, name)
    if array is None:
        return None
    if array.ndim == 2 and array.shape[0] == 1:  # the batch dimension the client sent
        array = array[0]
    if array.ndim != 1:
        raise InvalidRequestError(f"{name} must be one-dimensional, got shape {list(array.shape)}")
    return array.astype(dtype, copy=False)


def _codes(request: Any) -> np.ndarray | None:
    array = _tensor(request, "ref_codes")
    if array is None:
        return None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    return array.astype(np.int64, copy=False)


def _sampling(request: Any) -> dict[str, Any]:
    values = {}
    for name, kind in _SAMPLING_INPUTS.items():
        value = _scalar(request, name)
        if value is not None:
            values[name] = kind(value)
    return values


def parse_request(request: Any, capability: Capability, *, session: bool = False) -> SynthesisRequest:
    text = _string(request, "text")
    if text is None and not session:
        raise InvalidRequestError("text is required")
    rate = _scalar(request, "ref_sample_rate")
    return SynthesisRequest(
        capability=capability,
        text=text or "",
        text_open=session,
        language=_string(request, "language") or "auto",
        speaker=_string(request, "speaker"),
        instruct=_string(request, "instruct"),
        ref_audio=_vector(request, "ref_audio", np.float32),
        ref_sample_rate=int(rate) if rate is not None else None,
        ref_text=_string(request, "ref_text"),
        x_vector_only=bool(_scalar(request, "x_vector_only") or False),
        speaker_embedding=_vector(request, "speaker_embedding", np.float32),
        ref_codes=_codes(request),
        sampling=_sampling(request),
    )


# ------------------------------------------------------------------------------------ sending outputs
class TritonSink:
    """A stream's chunks as decoupled responses; FINAL always closes the request.

    With ``whole=True`` (the request's ``stream`` input set to false) the chunks are gathered and sent as
    one response carrying FINAL, which is what Triton's HTTP ``generate`` endpoint needs.
    """

    def __init__(self, sender: Any, *, whole: bool = False) -> None:
        self._sender = sender
        self._whole = whole
        self._gathered: list[np.ndarray] = []
        self._closed = False

    def send(self, chunk: AudioChunk) -> None:
        if self._closed:
            return
        if self._whole:
            self._gathered.append(chunk.audio)
            if not chunk.is_last:
                return
            audio = np.concatenate(self._gathered)
            chunk = AudioChunk(0, audio, chunk.sample_rate, True, chunk.finish_reason)
        response = pb_utils.InferenceResponse(output_tensors=_chunk_tensors(chunk))
        if chunk.is_last and self._whole:
            self._closed = True
            self._sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        self._sender.send(response)
        if chunk.is_last:
            self._finish()

    def fail(self, error: Exception) -> None:
        if self._closed:
            return
        self._closed = True
        self._sender.send(
            pb_utils.InferenceResponse(error=triton_error(error)),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    def is_cancelled(self) -> bool:
        return self._closed or self._sender.is_cancelled()

    def _finish(self) -> None:
        self._closed = True
        self._sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def _chunk_tensors(chunk: AudioChunk) -> list[Any]:
    arrays = chunk_arrays(
        sequence=chunk.sequence,
        audio=chunk.audio,
        sample_rate=chunk.sample_rate,
        is_last=chunk.is_last,
        finish_reason=chunk.finish_reason,
    )
    return [pb_utils.Tensor(name, array) for name, array in arrays.items()]


def wait_until_idle(engine: Any, timeout_s: float) -> bool:
    """Wait until ``engine`` holds no stream (none queued, stepping or paused for text) or ``timeout_s``
    has passed; True when it is idle. Reads only counts, so it may run beside the engine's thread."""
    deadline = time.monotonic() + timeout_s
    while engine.has_work() or engine.occupied_slots:
        if time.monotonic() >= deadline:
            return False
        time.sleep(_DRAIN_POLL_S)
    return True


class StreamingSynthesisModel:
    """Base of the three synthesis models: subclasses only name their capability.

    Drain: Triton 2.51 on SIGTERM (``--exit-timeout-secs``) reports not ready, refuses requests for models it
    is unloading and unloads a model only once its live streams are done. ``finalize()`` still waits for
    streams it holds (up to ``drain_timeout_s``) rather than failing them, and refuses new ones meanwhile
    (UNAVAILABLE: a gateway tries another server).
    """

    capability: Capability
    draining = False
    drain_timeout_s: float = EngineConfig.drain_timeout_s

    def initialize(self, args: dict[str, Any]) -> None:
        from .engine.engine import StreamingEngine
        from .engine.loading import load_model

        config = engine_config(args)
        self.drain_timeout_s = config.drain_timeout_s
        if not pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"])):
            raise pb_utils.TritonModelException(f"{args['model_name']} must use the decoupled policy")
        try:
            tts = load_model(config, self.capability)
        except (OSError, ValueError) as error:
            raise pb_utils.TritonModelException(f"cannot load {config.checkpoint_dir}: {error}") from None
        self.metrics = EngineMetrics(args["model_name"])
        try:
            self.engine = StreamingEngine(tts, self.capability, config, EngineTally(self.metrics.publish))
        except ValueError as error:  # a setting the model cannot run with (e.g. cuda_graphs on a CPU)
            raise pb_utils.TritonModelException(f"{args['model_name']}: {error}") from None
        self.engine.start()
        _log.info(f"{args['model_name']}: engine ready ({self.engine.config})")

    def execute(self, requests: list[Any]) -> None:
        streams = []
        for request in requests:
            sender = request.get_response_sender()
            if self.draining:
                TritonSink(sender).fail(EngineUnavailableError(_DRAINING))
                continue
            try:
                stream_flag = _scalar(request, "stream")
                sink = TritonSink(sender, whole=stream_flag is not None and not bool(stream_flag))
            except InvalidRequestError as error:
                TritonSink(sender).fail(error)
                continue
            try:
                parsed = self.engine.validate(parse_request(request, self.capability))
                streams.append(self.engine.make_stream(parsed, sink))
            except InvalidRequestError as error:
                sink.fail(error)
            except Exception as error:  # a malformed tensor must not cost the other requests their turn
                _log.warning(f"request rejected: {error}")
                sink.fail(InvalidRequestError(f"malformed request: {error}"))
        if streams:
            self.engine.submit(streams)
        return None

    def finalize(self) -> None:
        self.draining = True
        if not wait_until_idle(self.engine, self.drain_timeout_s):
            _log.warning(
                f"streams still live after the {self.drain_timeout_s:g} s drain timeout; failing them"
            )
        self.engine.stop()


class SessionSynthesisModel(StreamingSynthesisModel):
    """Voice-agent sessions over Triton's sequence batcher: START opens a session (its response sender
    carries all the audio), every later request of the sequence appends text and is acknowledged with an
    empty FINAL response, END closes the input."""

    def execute(self, requests: list[Any]) -> None:
        starts: list[tuple[int, Any, bool]] = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                key = int(_scalar(request, "CORRID"))
                if _scalar(request, "START") and self.draining:  # an open session's text is still taken
                    raise EngineUnavailableError(_DRAINING)
                if _scalar(request, "START"):
                    starts.append((key, self._new_stream(request, sender), bool(_scalar(request, "END"))))
                else:
                    self._append(request, key)
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except (InvalidRequestError, EngineUnavailableError) as error:
                TritonSink(sender).fail(error)
            except Exception as error:
                _log.warning(f"session request rejected: {error}")
                TritonSink(sender).fail(InvalidRequestError(f"malformed request: {error}"))
        if starts:
            self.engine.open_sessions(starts)

    def _new_stream(self, request: Any, sender: Any) -> Any:
        parsed = self.engine.validate(parse_request(request, self.capability, session=True))
        stream = self.engine.make_stream(parsed, TritonSink(sender))
        lookahead = _scalar(request, "lookahead_tokens")
        if lookahead is not None:
            if not 0 <= int(lookahead) <= 64:
                raise InvalidRequestError(f"lookahead_tokens must be between 0 and 64, got {lookahead}")
            stream.lookahead = int(lookahead)
        return stream

    def _append(self, request: Any, key: int) -> None:
        self.engine.append_text(
            key,
            _string(request, "text") or "",
            flush=bool(_scalar(request, "flush") or False),
            close=bool(_scalar(request, "END")),
        )


class VoicePromptModel:
    """Reference clip -> speaker embedding + reference codes, for the whole batch Triton hands over."""

    def initialize(self, args: dict[str, Any]) -> None:
        from .engine.loading import load_model, model_spec

        self.config = engine_config(args)
        try:
            self.tts = load_model(self.config, Capability.VOICE_CLONE)
        except (OSError, ValueError) as error:
            raise pb_utils.TritonModelException(
                f"cannot load {self.config.checkpoint_dir}: {error}"
            ) from None
        self.spec = model_spec(self.tts, Capability.VOICE_CLONE)

    def execute(self, requests: list[Any]) -> list[Any]:
        from .engine.voice_prompts import extract_voice_prompts, validate_clip

        responses: list[Any] = [None] * len(requests)
        valid: list[tuple[int, SynthesisRequest]] = []
        for index, request in enumerate(requests):
            try:
                parsed = _clip_request(request)
                valid.append((index, validate_clip(parsed, self.spec, self.config.limits)))
            except (InvalidRequestError, ValueError) as error:
                responses[index] = pb_utils.InferenceResponse(error=triton_error(error))
        if valid:
            try:
                prompts = extract_voice_prompts(self.tts, [r for _, r in valid])
            except Exception as error:
                _log.error(f"voice prompt extraction failed: {error}")
                prompts = [
                    triton_error(EngineUnavailableError("voice prompt extraction failed; retry"))
                ] * len(valid)
            for (index, _), prompt in zip(valid, prompts, strict=True):
                responses[index] = _prompt_response(prompt)
        return responses


def _clip_request(request: Any) -> SynthesisRequest:
    rate = _scalar(request, "ref_sample_rate")
    return SynthesisRequest(
        capability=Capability.VOICE_CLONE,
        text="",
        ref_audio=_vector(request, "ref_audio", np.float32),
        ref_sample_rate=int(rate) if rate is not None else None,
        ref_text=_string(request, "ref_text"),
        x_vector_only=bool(_scalar(request, "x_vector_only") or False),
    )


def _prompt_response(prompt: Any) -> Any:
    if isinstance(prompt, pb_utils.TritonError):
        return pb_utils.InferenceResponse(error=prompt)
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(name, PROMPT_OUTPUTS[name].array(getattr(prompt, name)))
            for name in ("speaker_embedding", "ref_codes")
        ]
    )
