"""The engine models: the thin layer between Triton's Python backend and one ``StreamingEngine``.

One engine model per checkpoint per GPU (``<checkpoint>_engine_<n>``) owns the weights, the key/value slots
and the one running batch; the client-facing models are fronts (``triton_front``) that forward to it, so
plain requests and voice-agent sessions of a checkpoint step together. This module turns the forwarded
requests (``contract.EngineRequestKind``) into ``SynthesisRequest`` objects, hands each entry batch to the
engine in one call and sends the engine's chunks back on each request's decoupled response sender. Every
request ends with the FINAL flag, after its last chunk or after its error response.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from .contract import (
    CHECKPOINT_CAPABILITIES,
    ERROR_OUTPUTS,
    PROMPT_OUTPUTS,
    SAMPLING_INPUTS,
    SHUTTING_DOWN,
    EngineRequestKind,
    chunk_arrays,
    model_parameters,
)
from .engine.config import EngineConfig
from .engine.observer import EngineObserver, EngineTally, Observers, TallySnapshot
from .engine.requests import (
    Capability,
    EngineUnavailableError,
    GenerationFaultError,
    InvalidRequestError,
    SynthesisRequest,
)
from .engine.streams import AudioChunk
from .load_board import LoadBoard, board_path
from .server_watch import DrainOnce, ServerWatch, live_url

# Python type of each sampling input, from the contract's datatypes.
_SAMPLING_INPUTS = {
    name: {"BOOL": bool, "FP32": float}.get(spec.datatype, int) for name, spec in SAMPLING_INPUTS.items()
}

_log = logging.getLogger(__name__)
_DRAIN_POLL_S = 0.05


def engine_config(args: dict[str, Any]) -> EngineConfig:
    try:
        return EngineConfig.from_parameters(model_parameters(args))
    except ValueError as error:
        raise pb_utils.TritonModelException(f"bad model parameters: {error}") from None


def error_parts(error: Exception) -> tuple[str, str]:
    """``(TritonError code name, message)``: the message is safe to show (no internals leak)."""
    if isinstance(error, InvalidRequestError | ValueError):
        return "INVALID_ARG", str(error)
    if isinstance(error, EngineUnavailableError):
        return "UNAVAILABLE", str(error)
    if isinstance(error, GenerationFaultError):  # its message is short and safe to show
        return "INTERNAL", str(error)
    return "INTERNAL", "internal error"


def error_response(error: Exception) -> Any:
    """An error as a response the front turns back into one (``contract.ERROR_OUTPUTS``)."""
    code, message = error_parts(error)
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("error", ERROR_OUTPUTS["error"].array(message)),
            pb_utils.Tensor("error_code", ERROR_OUTPUTS["error_code"].array(code)),
        ]
    )


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
        self.mixed_steps = metric(
            "qwen3_tts_mixed_steps_total",
            "Steps whose batch held plain streams and voice-agent sessions together",
            family.COUNTER,
        )
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
            if snapshot.mixed_steps:
                self.mixed_steps.increment(snapshot.mixed_steps)
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

    def __init__(
        self, sender: Any, *, whole: bool = False, on_close: Callable[[], None] | None = None
    ) -> None:
        self._sender = sender
        self._whole = whole
        self._gathered: list[np.ndarray] = []
        self._closed = False
        self._on_close = on_close
        self.cancelled = False  # the front said its client went away

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
            self._close()
            self._sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        self._sender.send(response)
        if chunk.is_last:
            self._close()
            self._sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def acknowledge(self) -> None:
        """An empty response: the front's BLS call returns on it, before the first chunk is ready."""
        self._sender.send(pb_utils.InferenceResponse(output_tensors=[]))

    def fail(self, error: Exception) -> None:
        if self._closed:
            return
        self._close()
        self._sender.send(error_response(error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def is_cancelled(self) -> bool:
        return self._closed or self.cancelled or self._sender.is_cancelled()

    def _close(self) -> None:
        self._closed = True
        if self._on_close is not None:
            self._on_close()


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


class EngineModel:
    """One checkpoint's engine on one device, for every request kind its fronts forward.

    Drain: Triton 2.51 on SIGTERM (``--exit-timeout-secs``) reports not ready, refuses requests for models it
    is unloading and unloads a model only once its live streams are done. ``finalize()`` still waits for
    streams it holds (up to ``drain_timeout_s``) rather than failing them, and refuses new ones meanwhile
    (UNAVAILABLE: a gateway tries another server). An open session speaks the text it has: Triton itself
    refuses its later requests while it stops ("... has no available versions").
    """

    draining = False
    drain_timeout_s: float = EngineConfig.drain_timeout_s

    def __init__(self) -> None:
        self.drain = DrainOnce(self._drain)
        self._server_watch: ServerWatch | None = None

    def initialize(self, args: dict[str, Any]) -> None:
        from .engine.engine import StreamingEngine
        from .engine.loading import load_model
        from .engine.voice_prompts import VoicePromptWorker

        name = args["model_name"]
        if not pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"])):
            raise pb_utils.TritonModelException(f"{name} must use the decoupled policy")
        checkpoint = model_parameters(args).get("checkpoint", "")
        if checkpoint not in CHECKPOINT_CAPABILITIES:
            valid = ", ".join(CHECKPOINT_CAPABILITIES)
            raise pb_utils.TritonModelException(f"{name}: checkpoint {checkpoint!r}; valid: {valid}")
        self.capability = Capability(CHECKPOINT_CAPABILITIES[checkpoint])
        config = engine_config(args)
        if args.get("model_instance_kind") == "GPU":  # the GPU its instance group names
            import torch

            device_id = int(args["model_instance_device_id"])
            config = replace(config, device=f"cuda:{device_id}")
            # Graph capture, streams and synchronisation use the current device: make it this engine's.
            torch.cuda.set_device(device_id)
        self.drain_timeout_s = config.drain_timeout_s
        try:
            tts = load_model(config, self.capability)
        except (OSError, ValueError) as error:
            raise pb_utils.TritonModelException(f"cannot load {config.checkpoint_dir}: {error}") from None
        self.metrics = EngineMetrics(name)
        self.board = LoadBoard.create(
            board_path(Path(args["model_repository"])), capacity=config.max_active_streams
        )
        self.prompts = (
            VoicePromptWorker(
                tts,
                config.limits,
                max_batch=config.voice_prompt_batch,
                step_share=config.voice_prompt_step_share,
                cache_size=config.voice_prompt_cache_size,
            )
            if self.capability is Capability.VOICE_CLONE
            else None
        )
        observer: EngineObserver = EngineTally(self.metrics.publish, on_step=self._publish_load)
        if self.prompts is not None:  # the worker paces itself by the engine's steps
            observer = Observers(observer, self.prompts.pacer)
        try:
            self.engine = StreamingEngine(tts, self.capability, config, observer)
        except ValueError as error:  # a setting the model cannot run with (e.g. cuda_graphs on a CPU)
            if self.prompts is not None:
                self.prompts.stop()
            raise pb_utils.TritonModelException(f"{name}: {error}") from None
        # Clone clips in speech requests and sessions are encoded by the worker too, not at admission.
        self.engine.voice_encoder = self.prompts
        self._live: dict[str, TritonSink] = {}  # stream key (the front's) -> its sink, for cancellation
        self.engine.start()
        self._server_watch = ServerWatch(live_url(), self.drain.in_background).start()
        _log.info(f"{name}: engine ready ({self.engine.config})")

    def _publish_load(self) -> None:
        self.board.publish(self.engine.load)

    def execute(self, requests: list[Any]) -> None:
        streams: list[Any] = []
        sessions: list[tuple[int, Any, bool]] = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                kind = EngineRequestKind(_string(request, "request_kind") or "")
            except ValueError:
                TritonSink(sender).fail(InvalidRequestError("request_kind is missing or unknown"))
                continue
            try:
                if kind is EngineRequestKind.SPEECH:
                    streams.append(self._new_stream(request, sender, session=False))
                elif kind is EngineRequestKind.SESSION_START:
                    stream = self._new_stream(request, sender, session=True)
                    sessions.append((_session_id(request), stream, bool(_scalar(request, "session_end"))))
                elif kind is EngineRequestKind.SESSION_TEXT:
                    self._append(request)
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                elif kind is EngineRequestKind.VOICE_PROMPT:
                    self._voice_prompt(request, sender)
                else:
                    self._cancel(request)
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except (InvalidRequestError, EngineUnavailableError) as error:
                TritonSink(sender).fail(error)
            except Exception as error:  # a malformed tensor must not cost the other requests their turn
                _log.warning(f"request rejected: {error}")
                TritonSink(sender).fail(InvalidRequestError(f"malformed request: {error}"))
        if streams:
            self.engine.submit(streams)
        if sessions:
            self.engine.open_sessions(sessions)
        self._publish_load()  # before the fronts see the acknowledgements' effect on placement
        return None

    def _new_stream(self, request: Any, sender: Any, *, session: bool) -> Any:
        if self.draining:
            raise EngineUnavailableError(SHUTTING_DOWN)
        stream_flag = _scalar(request, "stream")
        key = _string(request, "stream_key") or ""
        sink = TritonSink(
            sender,
            whole=stream_flag is not None and not bool(stream_flag) and not session,
            on_close=lambda: self._live.pop(key, None),
        )
        parsed = self.engine.validate(parse_request(request, self.capability, session=session))
        stream = self.engine.make_stream(parsed, sink)
        if session:
            lookahead = _scalar(request, "lookahead_tokens")
            if lookahead is not None:
                if not 0 <= int(lookahead) <= 64:
                    raise InvalidRequestError(f"lookahead_tokens must be between 0 and 64, got {lookahead}")
                stream.lookahead = int(lookahead)
        if key:
            self._live[key] = sink
        sink.acknowledge()
        return stream

    def _append(self, request: Any) -> None:
        self.engine.append_text(
            _session_id(request),
            _string(request, "text") or "",
            flush=bool(_scalar(request, "flush") or False),
            close=bool(_scalar(request, "session_end")),
        )

    def _cancel(self, request: Any) -> None:
        sink = self._live.get(_string(request, "stream_key") or "")
        if sink is not None:
            sink.cancelled = True  # the engine drops the stream at its next step

    def _voice_prompt(self, request: Any, sender: Any) -> None:
        if self.prompts is None:
            raise InvalidRequestError(f"this engine serves {self.capability.value}; voice prompts need base")
        if self.draining:
            raise EngineUnavailableError(SHUTTING_DOWN)
        clip = self.prompts.validate(_clip_request(request), self.engine.spec)

        def reply(prompt: Any) -> None:
            if isinstance(prompt, Exception):
                _log.error(f"voice prompt extraction failed: {prompt}")
                response = error_response(EngineUnavailableError("voice prompt extraction failed; retry"))
            else:
                response = _prompt_response(prompt)
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

        self.prompts.submit(clip, reply)

    def finalize(self) -> None:
        self.drain()
        if self._server_watch is not None:
            self._server_watch.end()

    def _drain(self) -> None:
        """Refuse new streams, let the held ones finish (up to ``drain_timeout_s``), then stop the engine:
        what is left gets the retry error and FINAL. Run once (``self.drain``): when the server is seen
        stopping (Triton calls finalize() only after every request has ended), else in finalize()."""
        self.draining = True
        if not wait_until_idle(self.engine, self.drain_timeout_s):
            _log.warning(f"streams still live after the {self.drain_timeout_s:g} s drain; failing them")
        self.engine.stop()
        if self.prompts is not None:
            self.prompts.stop()


def _session_id(request: Any) -> int:
    value = _scalar(request, "session_id")
    if value is None:
        raise InvalidRequestError("session_id is required")
    return int(value)


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
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(name, PROMPT_OUTPUTS[name].array(getattr(prompt, name)))
            for name in ("speaker_embedding", "ref_codes")
        ]
    )
