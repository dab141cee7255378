"""The client-facing fronts without Triton: a stand-in ``triton_python_backend_utils`` and scripted engine
answers. What it shows: a new stream goes to the least loaded engine (counting what was just sent), the
engine's chunks are relayed with FINAL on the last one, an engine error sent as tensors becomes the client's
error with its code, a client that went away gets its engine stream cancelled, and a finished request is
never asked whether it was cancelled (tritonserver 2.51 crashes on that)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_pb_utils
import numpy as np
import pytest
from fake_pb_utils import FINAL, Response, Tensor

from qwen3_tts_serving import contract, load_board
from qwen3_tts_serving.load_board import LoadBoard, board_path


class Engines:
    """What the fake BLS calls reach: each request recorded, each answered by the script for its kind."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.scripts: dict[str, list[Response]] = {}

    def exec(self, model: str, inputs: list[Tensor]) -> Iterator[Response]:
        values = {t.name(): t.as_numpy().reshape(-1)[0] for t in inputs}
        kind = values["request_kind"].decode()
        self.requests.append((model, values))
        return iter(list(self.scripts.get(kind, [])))


ENGINES = Engines()


class InferenceRequest:
    """The BLS request: ``exec`` hands it to the scripted engines."""

    def __init__(
        self, model_name: str, inputs: list[Tensor], requested_output_names: list[str], **options: Any
    ) -> None:
        self.model, self.inputs, self.options = model_name, inputs, options

    def exec(self, decoupled: bool = False) -> Iterator[Response]:
        return ENGINES.exec(self.model, self.inputs)


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[Response | None, int]] = []
        self.threads: set[int] = set()
        self.cancelled = False
        self.asked_after_final = False

    def send(self, response: Response | None = None, flags: int = 0) -> None:
        assert not self.closed, "a response after FINAL"
        self.sent.append((response, flags))
        self.threads.add(threading.get_ident())

    def is_cancelled(self) -> bool:
        self.asked_after_final |= self.closed
        return self.cancelled

    @property
    def closed(self) -> bool:
        return any(flags & FINAL for _, flags in self.sent)


class Request:
    def __init__(self, request_id: str = "", **fields: Any) -> None:
        self.tensors = {name: Tensor(name, array) for name, _, array in contract.request_arrays(fields)}
        self.sender = Sender()
        self.id = request_id

    def request_id(self) -> str:
        return self.id

    def inputs(self) -> list[Tensor]:
        return list(self.tensors.values())

    def get_response_sender(self) -> Sender:
        return self.sender


@pytest.fixture
def front_module() -> Iterator[types.ModuleType]:
    sys.modules["triton_python_backend_utils"] = fake_pb_utils.module(InferenceRequest=InferenceRequest)
    ENGINES.requests.clear()
    ENGINES.scripts.clear()
    try:
        yield importlib.reload(importlib.import_module("qwen3_tts_serving.triton_front"))
    finally:
        del sys.modules["triton_python_backend_utils"]


@pytest.fixture
def never_ending_streams() -> Iterator[threading.Event]:
    """Every engine stream acknowledges, then stays quiet until the event is set (or 30 s)."""
    never = threading.Event()

    def stream_that_never_ends() -> Iterator[Response]:
        yield Response([])  # the engine's acknowledgement
        never.wait(30)

    original = ENGINES.exec
    ENGINES.exec = lambda model, inputs: (original(model, inputs), stream_that_never_ends())[1]  # type: ignore[method-assign]
    try:
        yield never
    finally:
        ENGINES.exec = original  # type: ignore[method-assign]
        never.set()


def _front(module: types.ModuleType, cls: str, repository: Path, engines: int = 2, **parameters: str) -> Any:
    names = [f"custom_voice_engine_{i}" for i in range(engines)]
    values = {"engines": ",".join(names), **parameters}
    config = {"parameters": {key: {"string_value": value} for key, value in values.items()}}
    front = getattr(module, cls)()
    front.initialize(
        {"model_name": "custom_voice", "model_repository": str(repository / "custom_voice"),
         "model_config": json.dumps(config)}
    )  # fmt: skip
    return front


def _boards(repository: Path, loads: list[int | None]) -> list[LoadBoard]:
    boards = []
    for index, load in enumerate(loads):
        if load is not None:
            (repository / f"custom_voice_engine_{index}").mkdir(parents=True, exist_ok=True)
            board = LoadBoard.create(board_path(repository / f"custom_voice_engine_{index}"), capacity=8)
            board.publish(load)
            boards.append(board)
    return boards


def _chunk(sequence: int, last: bool) -> Response:
    arrays = contract.chunk_arrays(
        sequence=sequence, audio=np.zeros(4, np.float32), sample_rate=24000, is_last=last,
        finish_reason="stop" if last else "",
    )  # fmt: skip
    return Response([Tensor(name, array) for name, array in arrays.items()])


def _error(message: str, code: str) -> Response:
    return Response(
        [
            Tensor("error", contract.ERROR_OUTPUTS["error"].array(message)),
            Tensor("error_code", contract.ERROR_OUTPUTS["error_code"].array(code)),
        ]
    )


def _wait_closed(sender: Sender) -> None:
    deadline = time.monotonic() + 5
    while not sender.closed:
        assert time.monotonic() < deadline, sender.sent
        time.sleep(0.005)


def test_placement_takes_the_least_loaded_engine_and_counts_what_it_just_sent(front_module, tmp_path):
    _boards(tmp_path, [3, 1])
    front = _front(front_module, "SpeechFront", tmp_path)
    assert [front.place().name for _ in range(3)] == [
        "custom_voice_engine_1",
        "custom_voice_engine_1",
        "custom_voice_engine_0",
    ]  # fmt: skip  (1, then 2 with one placing; then 3 vs 3: the lower index)


def test_an_engine_without_a_board_gets_nothing(front_module, tmp_path):
    _boards(tmp_path, [None, 5])
    front = _front(front_module, "SpeechFront", tmp_path)
    assert front.place().name == "custom_voice_engine_1"


def test_chunks_are_relayed_and_the_last_carries_final(front_module, tmp_path):
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["speech"] = [Response([]), _chunk(0, False), _chunk(1, True), Response([])]
    front = _front(front_module, "SpeechFront", tmp_path)
    request = Request(text="Hello.", speaker="ryan")
    front.execute([request])
    _wait_closed(request.sender)
    flags = [f for _, f in request.sender.sent]
    assert flags == [0, FINAL] and all(r.output_tensors() for r, _ in request.sender.sent)
    model, values = ENGINES.requests[0]
    assert model == "custom_voice_engine_0" and values["text"] == b"Hello."
    assert values["stream_key"].decode().startswith("custom_voice:")
    assert all(engine.placing == 0 for engine in front.engines)  # confirmed by the acknowledgement


def test_stream_keys_cannot_be_guessed(front_module, tmp_path):
    """Any client can call an engine model directly (Triton has no private models), so a ``cancel`` naming a
    key stops that stream: keys carry 128 random bits, not the front's pid and a counter."""
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["speech"] = [Response([]), _chunk(0, True)]
    front = _front(front_module, "SpeechFront", tmp_path)
    requests = [Request(text=f"Stream {n}.", speaker="ryan") for n in range(2)]
    front.execute(requests)
    for request in requests:
        _wait_closed(request.sender)
    keys = [values["stream_key"].decode() for _, values in ENGINES.requests]
    for key in keys:
        prefix, _, token = key.rpartition(":")
        assert prefix == "custom_voice" and len(token) == 32 and int(token, 16) >= 0, key
    assert keys[0] != keys[1]


def _batch_of_two(request: Request) -> Request:
    for name, tensor in request.tensors.items():
        request.tensors[name] = Tensor(name, np.concatenate([tensor.as_numpy()] * 2))
    return request


@pytest.mark.parametrize("cls", ["SpeechFront", "SessionFront", "VoicePromptFront"])
def test_a_request_carrying_a_batch_is_refused_naming_the_batch_size(front_module, tmp_path, cls):
    """A request is one stream. Forwarded, a batch of 2 failed at the engine with Triton's "input 'speaker'
    batch size does not match other inputs for 'custom_voice_engine_0'" (the routing inputs have 1)."""
    _boards(tmp_path, [0, 0])
    front = _front(front_module, cls, tmp_path)
    try:
        request = _batch_of_two(Request(text="Hello.", speaker="ryan", session_id=7, session_start=True))
        answers = front.execute([request])  # voice_prompt answers in a list; the others on the sender
        (response, flags) = (answers[0], FINAL) if answers else request.sender.sent[-1]
        assert flags == FINAL and response.error().code() == "INVALID_ARG"
        assert response.error().message() == (
            "a request is one stream: input 'text' has a batch of 2; "
            "send every input with batch size 1 (shape [1, ...])"
        )
        assert not ENGINES.requests
    finally:
        front._running = False


@pytest.mark.parametrize("cls", ["SpeechFront", "SessionFront", "VoicePromptFront"])
def test_a_clip_over_the_limit_is_refused_before_it_reaches_an_engine(front_module, tmp_path, cls):
    """Forwarded, a 400 MB clip was copied into the engine's shared memory, which grew to hold it and never
    shrank; the front refuses it with the engine's own words. A clip within the limit goes on."""
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["speech"] = [Response([]), _chunk(0, True)]
    front = _front(front_module, cls, tmp_path, max_ref_audio_seconds="30.0")
    try:
        requests = [
            Request(
                session_id=7 + seconds,
                session_start=True,
                text="Hi.",
                ref_audio=np.zeros(seconds * 16000, np.float32),
                ref_sample_rate=16000,
            )
            for seconds in (31, 4)
        ]
        answers = front.execute(requests[:1])  # voice_prompt answers in a list; the others on the sender
        (response, flags) = (answers[0], FINAL) if answers else requests[0].sender.sent[-1]
        assert flags == FINAL and response.error().code() == "INVALID_ARG"
        assert response.error().message() == "ref_audio is 31.0 s; at most 30 s is accepted"
        assert not ENGINES.requests
        front.execute(requests[1:])
        assert len(ENGINES.requests) == 1
    finally:
        front._running = False


def test_an_engine_error_sent_as_tensors_is_the_clients_error_with_its_code(front_module, tmp_path):
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["speech"] = [
        Response([]),
        _chunk(0, False),
        _error("unknown speaker; valid: ryan", "INVALID_ARG"),
    ]
    front = _front(front_module, "SpeechFront", tmp_path)
    request = Request(text="Hello.", speaker="zed")
    front.execute([request])
    _wait_closed(request.sender)
    (response, flags) = request.sender.sent[-1]
    assert flags == FINAL and response.error().code() == "INVALID_ARG"
    assert response.error().message() == "unknown speaker; valid: ryan"


def test_a_stream_the_engine_ends_without_a_last_chunk_still_gets_final(front_module, tmp_path):
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["speech"] = [Response([]), _chunk(0, False)]
    front = _front(front_module, "SpeechFront", tmp_path)
    request = Request(text="Hello.", speaker="ryan")
    front.execute([request])
    _wait_closed(request.sender)
    assert request.sender.sent[-1] == (None, FINAL)


def test_a_client_that_went_away_gets_its_engine_stream_cancelled(front_module, tmp_path):
    _boards(tmp_path, [0, 0])
    release = threading.Event()

    def slow_stream() -> Iterator[Response]:
        yield Response([])
        release.wait(5)
        yield _chunk(0, True)

    front = _front(front_module, "SpeechFront", tmp_path)
    original = ENGINES.exec
    ENGINES.exec = lambda model, inputs: (  # type: ignore[method-assign]
        original(model, inputs) if len(ENGINES.requests) else (original(model, inputs), slow_stream())[1]
    )
    try:
        request = Request(text="Hello.", speaker="ryan")
        front.execute([request])
        request.sender.cancelled = True
        deadline = time.monotonic() + 5
        while not any(v["request_kind"] == b"cancel" for _, v in ENGINES.requests):
            assert time.monotonic() < deadline, "no cancel reached the engine"
            time.sleep(0.01)
        key = ENGINES.requests[0][1]["stream_key"]
        assert [v["stream_key"] for _, v in ENGINES.requests if v["request_kind"] == b"cancel"] == [key]
        release.set()
        _wait_closed(request.sender)
        time.sleep(0.3)  # a few watcher rounds after FINAL
        assert not request.sender.asked_after_final
    finally:
        ENGINES.exec = original  # type: ignore[method-assign]
        release.set()
        front._running = False


def _session_request(session_id: int, *, start: bool, end: bool = False, **fields: Any) -> Request:
    return Request(session_id=session_id, session_start=start, session_end=end, **fields)


def test_session_text_for_an_unknown_session_is_refused_by_the_front(front_module, tmp_path):
    _boards(tmp_path, [0, 0])
    front = _front(front_module, "SessionFront", tmp_path)
    request = _session_request(77, start=False, text="more")
    front.execute([request])
    (response, flags) = request.sender.sent[-1]
    assert flags == FINAL and "no open session 77" in response.error().message()
    assert response.error().code() == "INVALID_ARG" and not ENGINES.requests


@pytest.mark.parametrize("start", [True, False])
def test_a_session_request_without_a_session_id_is_refused_naming_it(front_module, tmp_path, start):
    """Triton 2.51 does not refuse a request that lacks the required session_id (it counts the inputs):
    int(None) failed the front's execute, and the client got a Python traceback."""
    _boards(tmp_path, [0, 0])
    front = _front(front_module, "SessionFront", tmp_path)
    request = Request(session_start=start, text="Hello.", speaker="ryan")
    front.execute([request])
    (response, flags) = request.sender.sent[-1]
    assert flags == FINAL and response.error().code() == "INVALID_ARG"
    assert response.error().message() == front_module.MISSING_SESSION_ID and not ENGINES.requests


def test_a_second_start_of_a_live_session_is_refused_and_the_session_goes_on(
    front_module, tmp_path, never_ending_streams
):
    """The engine that holds the session refuses the second START ("already running"); the front sent it
    there (not to the least loaded engine, which would open a second session of that ID) and, once the
    refusal ended it, still knows where the live session is: its text and END reach it (they were refused
    with "no open session")."""
    boards = _boards(tmp_path, [0, 0])
    original = ENGINES.exec

    def engines(model: str, inputs: list[Tensor]) -> Iterator[Response]:
        starts = sum(v["request_kind"] == b"session_start" for _, v in ENGINES.requests)
        answer = original(model, inputs)  # recorded; a never-ending stream (the fixture)
        if starts and ENGINES.requests[-1][1]["request_kind"] == b"session_start":
            return iter([Response([]), _error("session 7 is already running", "INVALID_ARG")])
        return answer

    ENGINES.exec = engines  # type: ignore[method-assign]
    front = _front(front_module, "SessionFront", tmp_path)
    try:
        first = _session_request(7, start=True, text="Hello", speaker="ryan")
        front.execute([first])
        boards[0].publish(1)  # the first session holds engine 0: the least loaded is now engine 1
        second = _session_request(7, start=True, text="Again", speaker="ryan")
        front.execute([second])
        _wait_closed(second.sender)
        (response, flags) = second.sender.sent[-1]
        assert flags == FINAL and response.error().message() == "session 7 is already running"
        time.sleep(0.2)  # the refused START's end has been handled
        text = _session_request(7, start=False, text=" there.")
        front.execute([text])
        assert not text.sender.sent, text.sender.sent[-1][0].error().message()  # forwarded, not refused
        assert [(model, v["request_kind"]) for model, v in ENGINES.requests] == [
            ("custom_voice_engine_0", b"session_start"),
            ("custom_voice_engine_0", b"session_start"),
            ("custom_voice_engine_0", b"session_text"),
        ]
        assert not first.sender.closed
    finally:
        ENGINES.exec = original  # type: ignore[method-assign]
        front._running = False


def test_session_text_carrying_start_inputs_is_refused_naming_them(
    front_module, tmp_path, never_ending_streams
):
    """A session's voice and sampling are set by its START; the engine reads only text and flush from later
    requests, so a speaker sent with more text was ignored without a word."""
    _boards(tmp_path, [0, 0])
    front = _front(front_module, "SessionFront", tmp_path)
    try:
        front.execute([_session_request(7, start=True, text="Hello", speaker="ryan")])
        request = _session_request(7, start=False, text=" there.", speaker="aiden", temperature=0.5)
        front.execute([request])
        (response, flags) = request.sender.sent[-1]
        assert flags == FINAL and response.error().code() == "INVALID_ARG"
        assert response.error().message() == (
            "speaker, temperature: only a session's START takes them; later requests take text and flush"
        )
        fine = _session_request(7, start=False, text=" there.", flush=True)
        front.execute([fine])
        assert not fine.sender.sent
        assert [v["request_kind"] for _, v in ENGINES.requests] == [b"session_start", b"session_text"]
    finally:
        front._running = False


def test_a_session_that_ends_before_its_clients_end_leaves_nothing_held(front_module, tmp_path):
    """A session is only what the front and its engine hold (no Triton sequence): once a START is refused
    (say for an unknown speaker), its ID is free at once, later text for it is refused by name, and nothing
    else is sent anywhere. Under Triton's sequence batcher 64 such STARTs held every sequence slot for a
    minute, and one session left open held a stopping server for its whole exit timeout."""
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["session_start"] = [
        Response([]),
        _error("unknown speaker 'zed'; valid: ryan", "INVALID_ARG"),
    ]
    front = _front(front_module, "SessionFront", tmp_path)
    try:
        refused = _session_request(4001, start=True, text="Hello", speaker="zed")
        front.execute([refused])
        _wait_closed(refused.sender)
        time.sleep(0.1)  # the relay's end has been handled
        text = _session_request(4001, start=False, end=True, text=" there.")
        front.execute([text])
        (response, flags) = text.sender.sent[-1]
        assert flags == FINAL and "no open session 4001" in response.error().message()
        assert "session_start" in response.error().message()  # how to open one

        ENGINES.scripts["session_start"] = [Response([]), _chunk(0, True)]
        again = _session_request(4001, start=True, text="Hello", speaker="ryan")
        front.execute([again])
        _wait_closed(again.sender)
        assert again.sender.sent[-1][1] == FINAL and again.sender.sent[-1][0].error() is None
        assert [v["request_kind"] for _, v in ENGINES.requests] == [b"session_start", b"session_start"]
    finally:
        front._running = False


def test_a_session_request_reaches_the_engine_with_the_routing_inputs_only(
    front_module, tmp_path, never_ending_streams
):
    """The client's session controls become the engine's routing inputs (``request_kind``, ``session_id``,
    ``session_end``): ``session_start`` is not passed on, and no input is sent twice."""
    _boards(tmp_path, [0, 0])
    front = _front(front_module, "SessionFront", tmp_path)
    captured: list[list[str]] = []
    original = ENGINES.exec

    def engines(model: str, inputs: list[Tensor]) -> Iterator[Response]:
        captured.append([t.name() for t in inputs])
        return original(model, inputs)

    ENGINES.exec = engines  # type: ignore[method-assign]
    try:
        front.execute([_session_request(2**63 + 5, start=True, text="Hello", speaker="ryan")])
        front.execute([_session_request(2**63 + 5, start=False, end=True, text=" there.")])
        assert [sorted(names) for names in captured] == [
            ["request_kind", "session_end", "session_id", "speaker", "stream_key", "text"],
            ["request_kind", "session_end", "session_id", "text"],
        ]
        assert [(v["session_id"], v["session_end"]) for _, v in ENGINES.requests] == [
            (2**63 + 5, False),
            (2**63 + 5, True),
        ]
    finally:
        ENGINES.exec = original  # type: ignore[method-assign]
        front._running = False


def test_every_stream_is_sent_on_from_one_thread(front_module, tmp_path):
    """Triton 2.51's stub corrupts its heap when several threads handle responses at once (see
    triton_front.OneThread): however many streams relay together, one thread sends on all of them."""
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["speech"] = [Response([]), _chunk(0, False), _chunk(1, False), _chunk(2, True)]
    front = _front(front_module, "SpeechFront", tmp_path)
    requests = [Request(text=f"Stream {n}.", speaker="ryan") for n in range(6)]
    front.execute(requests)
    for request in requests:
        _wait_closed(request.sender)
        assert [f for _, f in request.sender.sent] == [0, 0, FINAL]
    (sending,) = set().union(*(request.sender.threads for request in requests))
    assert sending != threading.get_ident()


class _Unreadable(Response):
    def output_tensors(self) -> list[Tensor]:
        raise RuntimeError("the response's memory is gone")


def test_a_response_that_cannot_be_read_ends_its_stream_with_an_error_and_final(front_module, tmp_path):
    _boards(tmp_path, [0, 0])
    ENGINES.scripts["speech"] = [Response([]), _chunk(0, False), _Unreadable([]), _chunk(1, True)]
    front = _front(front_module, "SpeechFront", tmp_path)
    request = Request(text="Hello.", speaker="ryan")
    front.execute([request])
    _wait_closed(request.sender)
    (chunk, flags), (failed, final) = request.sender.sent
    assert flags == 0 and chunk.output_tensors()
    assert final == FINAL and "stopped mid-stream" in failed.error().message()


def test_a_stream_whose_engine_process_exited_ends_with_an_error_and_final(
    front_module, tmp_path, never_ending_streams
):
    """Seen at shutdown with tritonserver 2.51: the engine unloaded and the front's BLS stream never ended,
    so the client's request never got FINAL and the front never unloaded. While the engine process lives,
    a quiet stream is left alone; once it has exited (its board's pid), the stream ends with a retry hint."""
    (board, _) = _boards(tmp_path, [0, 5])  # the stream goes to engine 0
    front = _front(front_module, "SpeechFront", tmp_path)
    try:
        request = Request(text="Hello.", speaker="ryan")
        front.execute([request])
        time.sleep(2 * front_module._ORPHAN_GRACE_S)
        assert not request.sender.closed and front._live  # a live engine's quiet stream is not ended
        exited = subprocess.Popen([sys.executable, "-c", "pass"])
        exited.wait()
        board._open()[load_board._FIELDS.index("pid")] = exited.pid  # the engine's process, gone
        _wait_closed(request.sender)
        (response, flags) = request.sender.sent[-1]
        assert flags == FINAL and response.error().message() == "the engine stopped mid-stream; retry"
        assert not front._live
    finally:
        front._running = False


def test_a_stream_still_live_when_the_drain_ends_gets_the_shutdown_error_and_final(
    front_module, tmp_path, never_ending_streams
):
    """The front's own drain ends what is left, whatever its engine does: a BLS stream that Triton leaves
    open would otherwise keep the client's request without FINAL and the front loaded until the server's
    exit timeout (the shutdown hang seen with tritonserver 2.51)."""
    _boards(tmp_path, [0, 5])  # live engines: nothing is an orphan
    front = _front(front_module, "SpeechFront", tmp_path)
    try:
        request = Request(text="Hello.", speaker="ryan")
        front.execute([request])
        front.drain_timeout_s = 0.3
        front.finalize()
        assert request.sender.closed and not front._live
        (response, flags) = request.sender.sent[-1]
        assert flags == FINAL and response.error().message() == contract.SHUTTING_DOWN
        never_ending_streams.set()  # the engine's stream ends after all: its relay sends nothing more
        time.sleep(0.2)
        assert len([f for _, f in request.sender.sent if f & FINAL]) == 1
    finally:
        front._running = False
