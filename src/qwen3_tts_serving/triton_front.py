"""The client-facing Triton models: thin fronts that forward each request to an engine model (BLS).

Every checkpoint has one engine model per GPU (``<checkpoint>_engine_<n>``, see ``triton_adapter``): it owns
the weights, the key/value slots and the one running batch in which plain streams and voice-agent sessions
step together. The fronts keep the contract clients see (``contract.MODEL_INPUTS``) and do three things:

* place each new stream on the least loaded engine of their checkpoint (``load_board``: streams held and
  queued), and keep a session on the engine that opened it;
* relay the engine's responses on the client's response sender: every request ends with the FINAL flag,
  after its last chunk or its error;
* notice a client that went away (Triton 2.51 does not cancel a BLS request) and tell the engine.

Only numpy, the contract and ``triton_python_backend_utils`` are imported: a front process holds no weights.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from .contract import (
    CHUNK_OUTPUTS,
    ERROR_OUTPUTS,
    FORWARDED_INPUTS,
    INPUTS,
    PROMPT_OUTPUTS,
    ROUTING_INPUTS,
    SHUTTING_DOWN,
    EngineRequestKind,
    ErrorKind,
    classify_error,
    model_parameters,
    no_open_session,
)
from .engine.requests import clip_too_long
from .load_board import LoadBoard, board_path
from .sampling_ranges import REF_SAMPLE_RATES
from .server_watch import DrainOnce, ServerWatch, live_url

_log = logging.getLogger(__name__)
_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_ENGINE_STOPPED = "the engine stopped mid-stream; retry"
_CANCEL_POLL_S = 0.1
# How long a stream's engine must have been gone before the stream is ended for it: responses the engine
# sent before it exited are still relayed meanwhile.
_ORPHAN_GRACE_S = 1.0
_DRAIN_POLL_S = 0.05

# What an engine's error message means, as the code a front answers with (decoupled engines send no code
# through BLS, so the message is what travels; contract.classify_error is its one reading).
_ERROR_CODES = {
    ErrorKind.INVALID: "INVALID_ARG",
    ErrorKind.NOT_FOUND: "NOT_FOUND",
    ErrorKind.CANCELLED: "CANCELLED",
    ErrorKind.INTERNAL: "INTERNAL",
}


class OneThread:
    """Runs the calls given to it on one thread of its own, each to the end before its caller goes on;
    what a call raises is raised to its caller.

    Triton 2.51's Python stub corrupts its heap when several threads handle BLS responses and send
    responses at once: with one relay thread per stream, a front crashed ("Stub process is not healthy",
    every later request refused) within 90 s in most runs at 8 concurrent streams. The relay threads now
    only wait for the engine's next response; reading it and sending it on happens here (0 crashes in
    7 runs of 90 s at 8 to 16 streams, some 6,000 streams).
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.Queue[_Call] = queue.Queue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            call = self._calls.get()
            try:
                call.function()
            except Exception as error:
                call.error = error
            finally:
                call.done.set()

    def __call__(self, function: Any) -> None:
        call = _Call(function)
        self._calls.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error


@dataclass
class _Call:
    function: Any
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


def triton_error(message: str) -> Any:
    code = _ERROR_CODES.get(classify_error(message), "UNAVAILABLE")
    return pb_utils.TritonError(message, getattr(pb_utils.TritonError, code))


def _scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    array = tensor.as_numpy()
    return array.reshape(-1)[0] if array.size == 1 else None


def batch_error(request: Any) -> str | None:
    """Why ``request`` is not one stream (an input with another batch size than 1), or None. Forwarded as it
    is, a batch of 2 failed at the engine with Triton's "input 'speaker' batch size does not match other
    inputs for 'custom_voice_engine_0'": the routing inputs the front adds have a batch of 1."""
    for tensor in request.inputs():
        shape = tensor.as_numpy().shape
        if tensor.name() in INPUTS and (not shape or shape[0] != 1):
            size = shape[0] if shape else 0
            return (
                f"a request is one stream: input {tensor.name()!r} has a batch of {size}; "
                "send every input with batch size 1 (shape [1, ...])"
            )
    return None


def clip_error(request: Any, max_seconds: float | None) -> str | None:
    """Why ``request``'s reference clip is refused before it is forwarded (longer than ``max_seconds``), or
    None; the engine checks the rest (its rate, its samples). Forwarded, a 400 MB clip was copied into the
    engine's shared memory, which grew to hold it and never shrank."""
    tensor = pb_utils.get_input_tensor_by_name(request, "ref_audio")
    rate = _scalar(request, "ref_sample_rate")
    if tensor is None or max_seconds is None or rate is None or not REF_SAMPLE_RATES.contains(int(rate)):
        return None
    seconds = tensor.as_numpy().size / int(rate)
    return clip_too_long(seconds, max_seconds) if seconds > max_seconds else None


def _routing(**values: Any) -> list[Any]:
    return [
        pb_utils.Tensor(name, ROUTING_INPUTS[name].array(value))
        for name, value in values.items()
        if value is not None
    ]


def _engine_error(tensors: list[Any]) -> Any | None:
    """The TritonError an engine sent as tensors (``contract.ERROR_OUTPUTS``), or None."""
    values = {t.name(): t.as_numpy().reshape(-1)[0] for t in tensors if t.name() in ERROR_OUTPUTS}
    if "error" not in values:
        return None
    message, code = (
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        for v in (values["error"], values.get("error_code", b"INTERNAL"))
    )
    return pb_utils.TritonError(message, getattr(pb_utils.TritonError, code, pb_utils.TritonError.INTERNAL))


def _is_last(tensors: list[Any]) -> bool:
    for tensor in tensors:
        if tensor.name() == "is_last":
            return bool(tensor.as_numpy().reshape(-1)[0])
    return False


@dataclass
class Engine:
    """One engine model of the front's checkpoint, and what the front has placed on it unconfirmed."""

    name: str
    index: int
    board: LoadBoard
    placing: int = 0  # streams sent to it whose first response has not come back yet
    gone_since: float | None = None  # when its process was first seen gone (monotonic)

    def load(self) -> float:
        published = self.board.load()
        # An engine without a board is not loaded (yet): place elsewhere while another one is.
        return float("inf") if published is None else published + self.placing


@dataclass
class LiveStream:
    engine: Engine
    sender: Any
    key: str
    cancel_sent: bool = False
    finished: bool = False  # FINAL sent (under ``lock``): its sender must not be asked anything more
    lock: threading.Lock = field(default_factory=threading.Lock)


class Front:
    """What every front shares: its engines, placement, relaying and cancellation."""

    draining = False
    drain_timeout_s = 30.0
    max_ref_audio_seconds: float | None = None

    def initialize(self, args: dict[str, Any]) -> None:
        self.parameters = parameters = model_parameters(args)
        self.name = args["model_name"]
        repository = Path(args["model_repository"]).parent  # the folder holding every model
        names = [name for name in parameters.get("engines", "").split(",") if name]
        if not names:
            raise pb_utils.TritonModelException(f"{self.name}: no engines configured")
        self.engines = [
            Engine(name, index, LoadBoard(board_path(repository / name))) for index, name in enumerate(names)
        ]
        self.drain_timeout_s = float(parameters.get("drain_timeout_s", self.drain_timeout_s))
        limit = parameters.get("max_ref_audio_seconds")  # models that take a reference clip
        self.max_ref_audio_seconds = float(limit) if limit else None
        self._lock = threading.Lock()
        self._live: dict[str, LiveStream] = {}
        self._responses_thread = OneThread("relay-responses")
        self._running = True
        self._watcher = threading.Thread(target=self._watch_cancellations, name="cancel-watch", daemon=True)
        self._watcher.start()
        self.drain = DrainOnce(self._drain)
        self._server_watch = ServerWatch(live_url(), self.drain.in_background).start()
        _log.info(f"{self.name}: forwarding to {', '.join(names)}")

    def refusal(self, request: Any) -> str | None:
        """Why the front refuses ``request`` itself (INVALID_ARG) rather than forward it, or None."""
        return batch_error(request) or clip_error(request, self.max_ref_audio_seconds)

    # ---------------------------------------------------------------------------------------- placement
    def place(self) -> Engine:
        """The least loaded engine (streams held and queued); ties go to the lowest index."""
        with self._lock:
            engine = self._least_loaded()
            engine.placing += 1
        return engine

    def _least_loaded(self) -> Engine:
        return min(self.engines, key=lambda e: (e.load(), e.index))

    def _placed(self, engine: Engine) -> None:
        with self._lock:
            engine.placing -= 1

    # ---------------------------------------------------------------------------------------- forwarding
    def send_to_engine(
        self, engine: Engine, request: Any | None, kind: EngineRequestKind, outputs: list[str], **routing: Any
    ) -> Any:
        """The engine's responses to ``request``'s inputs plus the routing ones (a BLS stream)."""
        inputs = [] if request is None else [t for t in request.inputs() if t.name() in FORWARDED_INPUTS]
        bls = pb_utils.InferenceRequest(
            model_name=engine.name,
            inputs=inputs + _routing(request_kind=kind.value, **routing),
            requested_output_names=outputs,
        )
        return bls.exec(decoupled=True)

    def relay(
        self,
        responses: Any,
        sender: Any,
        engine: Engine | None = None,
        live: LiveStream | None = None,
    ) -> None:
        """Send the engine's responses on ``sender``: chunks as they come, the last chunk or an error with
        FINAL, a bare FINAL if the engine ended without either. The calling thread (one per stream) only
        waits for the next response; reading and sending it happen on the front's one responses thread."""
        closed = False
        confirmed = engine is None

        def send(response: Any | None, final: bool) -> bool:
            if live is None:
                return self._send(sender, response, final=final)
            # Never beside the watcher's is_cancelled(): asking a request Triton has completed crashes
            # tritonserver 2.51 (TRITONBACKEND_ResponseFactoryIsCancelled on a freed factory).
            with live.lock:
                if live.finished:  # ended by the watcher (its engine is gone): nothing more to send
                    return True
                done = self._send(sender, response, final=final)
                live.finished = live.finished or done
            return done

        def handle(response: Any) -> None:
            nonlocal closed, confirmed
            if not confirmed:
                self._placed(engine)  # type: ignore[arg-type]
                confirmed = True
            if closed:
                return  # drain what is left so the engine's stream completes
            if response.has_error():
                closed = send(
                    pb_utils.InferenceResponse(error=triton_error(response.error().message())), True
                )
                return
            tensors = response.output_tensors()
            if not tensors:
                return  # the engine's acknowledgement, or its bare FINAL
            error = _engine_error(tensors)
            if error is not None:
                closed = send(pb_utils.InferenceResponse(error=error), True)
                return
            closed = send(pb_utils.InferenceResponse(output_tensors=tensors), _is_last(tensors))

        def broke_off(error: Exception) -> None:
            nonlocal closed
            _log.warning(f"{self.name}: stream from the engine broke off: {error}")
            if not closed:
                closed = send(
                    pb_utils.InferenceResponse(error=triton_error(_ENGINE_STOPPED)),
                    True,
                )

        def end() -> None:
            if not confirmed:
                self._placed(engine)  # type: ignore[arg-type]
            if not closed:
                send(None, True)
            if live is not None:
                with self._lock:
                    self._live.pop(live.key, None)

        try:
            for response in responses:
                self._responses_thread(lambda response=response: handle(response))
                del response
        except Exception as error:  # the engine went away mid-stream
            self._responses_thread(lambda error=error: broke_off(error))
        finally:
            self._responses_thread(end)

    @staticmethod
    def _send(sender: Any, response: Any | None, *, final: bool) -> bool:
        """Send; True once the request is closed (FINAL sent, or the client gone)."""
        try:
            if response is None:
                sender.send(flags=_FINAL)
            else:
                sender.send(response, flags=_FINAL if final else 0)
        except Exception as error:  # a client that went away: nothing more to say to it
            _log.debug(f"send failed: {error}")
            return True
        return final

    def fail(self, sender: Any, message: str, code: str = "UNAVAILABLE") -> None:
        """The front's own refusal (``code``: a TritonError name; UNAVAILABLE ones say "retry")."""
        error = pb_utils.TritonError(message, getattr(pb_utils.TritonError, code))
        self._send(sender, pb_utils.InferenceResponse(error=error), final=True)

    def start_stream(
        self,
        sender: Any,
        request: Any,
        kind: EngineRequestKind,
        engine: Engine,
        *,
        on_end: Any = None,
        **routing: Any,
    ) -> bool:
        """Forward and relay one stream on ``engine`` (just placed); False when it could not start."""
        # 128 random bits, not a counter: an engine model is reachable by any client of the server (Triton
        # has no private models), and a ``cancel`` naming a guessable key would stop another client's stream.
        key = f"{self.name}:{secrets.token_hex(16)}"
        try:
            responses = self.send_to_engine(
                engine, request, kind, [*CHUNK_OUTPUTS, *ERROR_OUTPUTS], stream_key=key, **routing
            )
        except Exception as error:
            self._placed(engine)
            _log.warning(f"{self.name}: engine {engine.name} refused a request: {error}")
            self.fail(sender, f"the engine {engine.name} is not available; retry")
            return False
        live = LiveStream(engine, sender, key)
        with self._lock:
            self._live[key] = live

        def run() -> None:
            try:
                self.relay(responses, sender, engine, live)
            finally:
                if on_end is not None:
                    on_end()

        threading.Thread(target=run, name=f"relay-{key}", daemon=True).start()
        return True

    # -------------------------------------------------------------------------------------- cancellation
    def _watch_cancellations(self) -> None:
        while self._running:
            time.sleep(_CANCEL_POLL_S)
            self._end_orphans()
            with self._lock:
                live = [s for s in self._live.values() if not s.cancel_sent]
            for stream in live:
                with stream.lock:
                    try:
                        cancelled = not stream.finished and stream.sender.is_cancelled()
                    except Exception:
                        cancelled = False
                if cancelled:
                    stream.cancel_sent = True
                    self._cancel(stream)

    def _end_orphans(self) -> None:
        """End the streams of an engine whose process has exited, after ``_ORPHAN_GRACE_S``. Triton 2.51
        can leave such a BLS stream open for ever (seen at shutdown: the engine unloaded, the front's
        stream never ended), and a request without FINAL keeps its client waiting and the front from
        unloading until tritonserver's exit timeout kills it."""
        now = time.monotonic()
        for engine in self.engines:
            if not engine.board.engine_gone():
                engine.gone_since = None
            elif engine.gone_since is None:
                engine.gone_since = now
        with self._lock:
            orphans = [
                stream
                for stream in self._live.values()
                if stream.engine.gone_since is not None and now - stream.engine.gone_since >= _ORPHAN_GRACE_S
            ]
        for stream in orphans:
            _log.warning(f"{self.name}: {stream.engine.name} exited; ending its stream {stream.key}")
            self._responses_thread(lambda stream=stream: self._end_live(stream, _ENGINE_STOPPED))

    def _end_live(self, stream: LiveStream, message: str) -> None:
        """End ``stream`` for its client with ``message`` and FINAL; its relay sends nothing more."""
        with stream.lock:
            if not stream.finished:
                error = triton_error(message)
                self._send(stream.sender, pb_utils.InferenceResponse(error=error), final=True)
                stream.finished = True
        with self._lock:
            self._live.pop(stream.key, None)

    def _cancel(self, stream: LiveStream) -> None:
        try:
            for _ in self.send_to_engine(
                stream.engine, None, EngineRequestKind.CANCEL, [], stream_key=stream.key
            ):
                pass
        except Exception as error:
            _log.warning(f"{self.name}: could not cancel {stream.key}: {error}")

    # ------------------------------------------------------------------------------------------- drain
    def finalize(self) -> None:
        self.drain()
        self._server_watch.end()
        self._running = False

    def _drain(self) -> None:
        """Refuse new streams, let live ones finish (up to ``drain_timeout_s``), then end what is left with
        the retry error and FINAL. Run once (``self.drain``): when the server is seen stopping, else in
        finalize()."""
        self.draining = True
        deadline = time.monotonic() + self.drain_timeout_s
        while self._live and time.monotonic() < deadline:
            time.sleep(_DRAIN_POLL_S)
        with self._lock:
            leftovers = list(self._live.values())
        if leftovers:
            _log.warning(f"{self.name}: ending {len(leftovers)} streams still live after the drain timeout")
        # Their engines end them too, at the end of their own drains; but a BLS stream that Triton leaves
        # open would keep its request without FINAL, and so this model loaded, until the exit timeout.
        for stream in leftovers:
            self._responses_thread(lambda stream=stream: self._end_live(stream, SHUTTING_DOWN))


class SpeechFront(Front):
    """``custom_voice``, ``voice_design``, ``voice_clone``: one stream per request."""

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            if self.draining:
                self.fail(sender, SHUTTING_DOWN)
                continue
            if (refusal := self.refusal(request)) is not None:
                self.fail(sender, refusal, "INVALID_ARG")
                continue
            self.start_stream(sender, request, EngineRequestKind.SPEECH, self.place())
        return None


# What only a session's START may carry: its later requests take text and flush.
START_ONLY_INPUTS = frozenset(FORWARDED_INPUTS) - {"text", "flush"}
MISSING_SESSION_ID = "session_id is required on every request of a session: UINT64 [1]"


@dataclass
class OpenSession:
    """Where a session's requests go, while any START of its ID is live."""

    engine: Engine
    # STARTs of this ID forwarded and not yet ended. A second START while the first session lives is refused
    # by the engine ("already running"); its end must not forget where the live one is.
    starts: int = 0


class SessionFront(Front):
    """``*_session``: the request with ``session_start`` opens a session on the least loaded engine and
    answers with all its audio; the session's later requests (its ``session_id``) go to the engine that
    holds it and are acknowledged with an empty FINAL; ``session_end`` closes its input.

    Sessions are plain inputs, not Triton's sequence batcher: a sequence counts as in flight until its END
    or its idle timeout, so one session left open (a client gone without END) held a stopping server for
    its whole exit timeout (exit status 1), and a refused START held one of its sequence slots for a
    minute. Here a session is only what the front and its engine hold, and both end it at their drain."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(args)
        self._sessions: dict[int, OpenSession] = {}

    def refusal(self, request: Any) -> str | None:
        # The config does not make Triton 2.51 refuse a request without session_id (it counts inputs, it
        # does not name them): without this, int(None) failed the execute with a traceback to the client.
        if (refusal := super().refusal(request)) is not None:
            return refusal
        return None if _scalar(request, "session_id") is not None else MISSING_SESSION_ID

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            if (refusal := self.refusal(request)) is not None:
                self.fail(sender, refusal, "INVALID_ARG")
                continue
            session_id = int(_scalar(request, "session_id"))
            end = bool(_scalar(request, "session_end"))
            if _scalar(request, "session_start"):
                self._open(sender, request, session_id, end)
                continue
            with self._lock:
                session = self._sessions.get(session_id)
            if session is None:
                message = f"{no_open_session(session_id)} (a session's first request carries session_start)"
                self.fail(sender, message, "INVALID_ARG")
                continue
            engine = session.engine
            start_only = [t.name() for t in request.inputs() if t.name() in START_ONLY_INPUTS]
            if start_only:  # the engine takes text and flush here: the rest was ignored without a word
                names = ", ".join(start_only)
                message = f"{names}: only a session's START takes them; later requests take text and flush"
                self.fail(sender, message, "INVALID_ARG")
                continue
            try:
                responses = self.send_to_engine(
                    engine,
                    request,
                    EngineRequestKind.SESSION_TEXT,
                    list(ERROR_OUTPUTS),
                    session_id=session_id,
                    session_end=end,
                )
            except Exception as error:
                _log.warning(f"{self.name}: session text not forwarded: {error}")
                self.fail(sender, f"the engine {engine.name} is not available; retry")
                continue
            threading.Thread(target=self.relay, args=(responses, sender), daemon=True).start()
        return None

    def _open(self, sender: Any, request: Any, session_id: int, end: bool) -> None:
        if self.draining:
            self.fail(sender, SHUTTING_DOWN)
            return
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = OpenSession(self._least_loaded())
            # A START for a live session goes to the engine that holds it, which refuses it.
            session.starts += 1
            engine = session.engine
            engine.placing += 1

        def forget() -> None:
            with self._lock:
                session.starts -= 1
                if not session.starts and self._sessions.get(session_id) is session:
                    del self._sessions[session_id]

        started = self.start_stream(
            sender,
            request,
            EngineRequestKind.SESSION_START,
            engine,
            on_end=forget,
            session_id=session_id,
            session_end=end,
        )
        if not started:
            forget()


class VoicePromptFront(Front):
    """``voice_prompt`` (not decoupled): each clip goes to the least loaded Base engine, which extracts the
    prompt beside its running batch; the batch Triton hands over is answered in one list."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(args)
        workers = int(self.parameters.get("voice_prompt_batch", "8"))
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="prompt")

    def execute(self, requests: list[Any]) -> list[Any]:
        return list(self._pool.map(self._one, requests))

    def _one(self, request: Any) -> Any:
        if self.draining:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(SHUTTING_DOWN, pb_utils.TritonError.UNAVAILABLE)
            )
        if (refusal := self.refusal(request)) is not None:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(refusal, pb_utils.TritonError.INVALID_ARG)
            )
        engine = self.place()
        answer = None
        try:
            for response in self.send_to_engine(
                engine, request, EngineRequestKind.VOICE_PROMPT, [*PROMPT_OUTPUTS, *ERROR_OUTPUTS]
            ):
                if answer is not None:
                    continue
                if response.has_error():
                    answer = pb_utils.InferenceResponse(error=triton_error(response.error().message()))
                elif tensors := response.output_tensors():
                    error = _engine_error(tensors)
                    answer = pb_utils.InferenceResponse(output_tensors=[] if error else tensors, error=error)
        except Exception as error:
            _log.warning(f"{self.name}: engine {engine.name} failed a voice prompt: {error}")
        finally:
            self._placed(engine)
        return answer or pb_utils.InferenceResponse(
            error=pb_utils.TritonError(
                f"the engine {engine.name} is not available; retry", pb_utils.TritonError.UNAVAILABLE
            )
        )

    def finalize(self) -> None:
        super().finalize()
        self._pool.shutdown(wait=False)
