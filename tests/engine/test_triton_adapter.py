"""The engine model without Triton: a stand-in ``triton_python_backend_utils`` (the module only exists
inside Triton's Python stub) around the real engine on the tiny checkpoints.

What it shows: request tensors are parsed into the engine's request, each bad request gets its error and
then FINAL while its batch-mates stream, a good one is acknowledged at once (the front's BLS call returns on
it), the one-shot path (``stream`` false) answers one response that carries FINAL, a front's cancel stops
the stream it names, the load board counts what the engine holds, and no response follows a FINAL.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import types
from dataclasses import dataclass
from typing import Any

import fake_pb_utils
import numpy as np
import pytest
from fake_pb_utils import FINAL, Response, Tensor

from qwen3_tts_serving import contract
from qwen3_tts_serving.engine.requests import (
    Capability,
    EngineUnavailableError,
    GenerationFaultError,
    InvalidRequestError,
)
from qwen3_tts_serving.load_board import LoadBoard


@dataclass
class EngineError:
    """An error an engine sent as tensors (``contract.ERROR_OUTPUTS``)."""

    message: str
    code: str


class Sender:
    """Records what a request's response sender was given; nothing may follow FINAL."""

    def __init__(self) -> None:
        self.sent: list[tuple[Response | None, int]] = []
        self.cancelled = False

    def send(self, response: Response | None = None, flags: int = 0) -> None:
        assert not self.closed, "a response after FINAL"
        self.sent.append((response, flags))

    def is_cancelled(self) -> bool:
        return self.cancelled

    @property
    def closed(self) -> bool:
        return any(flags & FINAL for _, flags in self.sent)

    @property
    def errors(self) -> list[EngineError]:
        """Errors, which an engine sends as tensors (a BLS stream drops error responses after the first)."""
        errors = []
        for response, _ in self.sent:
            if response is not None and response.output("error") is not None:
                message, code = (
                    response.output(name).reshape(-1)[0].decode() for name in ("error", "error_code")
                )
                errors.append(EngineError(message, code))
        return errors

    @property
    def acknowledged(self) -> bool:
        first = self.sent[0][0] if self.sent else None
        return first is not None and not first.has_error() and not first.output_tensors()

    @property
    def chunks(self) -> list[contract.Chunk]:
        return [
            contract.parse_chunk(r.output)
            for r, _ in self.sent
            if r is not None and r.output("audio") is not None
        ]


class Request:
    def __init__(self, kind: str = "speech", stream_key: str | None = None, **fields: Any) -> None:
        self.tensors = {name: Tensor(name, array) for name, _, array in contract.request_arrays(fields)}
        routing = {"request_kind": kind, "stream_key": stream_key}
        for name, value in routing.items():
            if value is not None:
                self.tensors[name] = Tensor(name, contract.ROUTING_INPUTS[name].array(value))
        self.sender = Sender()

    def get_response_sender(self) -> Sender:
        return self.sender


@pytest.fixture(scope="module")
def adapter() -> types.ModuleType:
    sys.modules["triton_python_backend_utils"] = fake_pb_utils.module()
    try:
        yield importlib.reload(importlib.import_module("qwen3_tts_serving.triton_adapter"))
    finally:
        del sys.modules["triton_python_backend_utils"]


@pytest.fixture
def model(adapter, make_engine, tmp_path):
    model = adapter.EngineModel()
    model.capability = Capability.CUSTOM_VOICE
    model.engine = make_engine(Capability.CUSTOM_VOICE, frames_per_char=50)
    model.board = LoadBoard.create(tmp_path / "load.board", capacity=model.engine.config.max_active_streams)
    model.prompts = None
    model._live = {}
    return model


def _speak(**extra: Any) -> Request:
    return Request(text="Hello there.", speaker="ryan", do_sample=False, max_new_tokens=8, **extra)


def test_request_tensors_become_the_engines_request(adapter) -> None:
    request = Request(
        text="Grüße.", speaker="Ryan", language="german", temperature=0.5, top_k=7, seed=2**40, do_sample=True
    )
    parsed = adapter.parse_request(request, Capability.CUSTOM_VOICE)
    assert (parsed.text, parsed.speaker, parsed.language) == ("Grüße.", "Ryan", "german")
    assert parsed.sampling == {"temperature": 0.5, "top_k": 7, "seed": 2**40, "do_sample": True}
    assert all(type(parsed.sampling[n]) is t for n, t in (("top_k", int), ("temperature", float)))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"speaker": "ryan"}, "text is required"),
        ({"text": np.array([[b"a", b"b"]], dtype=np.object_)}, "text must hold exactly one value"),
        ({"text": np.array([[b"\xff\xfe"]], dtype=np.object_)}, "text is not valid UTF-8"),
    ],
)
def test_malformed_tensors_are_refused_with_a_reason(adapter, tensors, message) -> None:
    request = Request()
    for name, value in tensors.items():
        array = value if isinstance(value, np.ndarray) else contract.INPUTS[name].array(value)
        request.tensors[name] = Tensor(name, array)
    with pytest.raises(InvalidRequestError, match=message):
        adapter.parse_request(request, Capability.CUSTOM_VOICE)


def test_bad_requests_get_an_error_then_final_and_their_batch_mates_stream(model) -> None:
    good, unknown, hot, malformed = _speak(), _speak(), _speak(temperature=1e39), _speak()
    unknown.tensors["speaker"] = Tensor("speaker", contract.INPUTS["speaker"].array("nobody"))
    malformed.tensors["text"] = Tensor("text", np.array([[b"a", b"b"]], dtype=np.object_))

    model.execute([good, unknown, hot, malformed])
    for bad in (unknown, hot, malformed):  # answered inside execute, before any step
        assert bad.sender.closed and len(bad.sender.sent) == 1
        (error,) = bad.sender.errors
        assert error.code == "INVALID_ARG"
    assert "valid: " in unknown.sender.errors[0].message
    assert "temperature must be" in hot.sender.errors[0].message
    assert good.sender.acknowledged and len(good.sender.sent) == 1
    assert model.board.load() == 1  # published before the front sees the acknowledgement

    model.engine.run_until_idle()
    chunks = good.sender.chunks
    assert len(chunks) > 1 and chunks[-1].is_last and not good.sender.errors
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert good.sender.sent[-1] == (None, FINAL)


def test_the_one_shot_path_answers_one_response_carrying_final(model) -> None:
    streamed, whole = _speak(), _speak(stream=False)
    model.execute([streamed, whole])
    model.engine.run_until_idle()
    assert whole.sender.acknowledged
    ((response, flags),) = whole.sender.sent[1:]
    assert flags == FINAL
    (chunk,) = whole.sender.chunks
    assert chunk.is_last and chunk.finish_reason
    np.testing.assert_allclose(
        chunk.audio, np.concatenate([c.audio for c in streamed.sender.chunks]), atol=1e-4
    )


def test_an_unknown_request_kind_is_refused_alone(model) -> None:
    odd, good = _speak(kind="dance"), _speak()
    model.execute([odd, good])
    (error,) = odd.sender.errors
    assert error.code == "INVALID_ARG" and "request_kind" in error.message and odd.sender.closed
    assert good.sender.acknowledged


def test_a_cancel_from_the_front_stops_the_stream_it_names(model) -> None:
    kept, dropped = _long(do_sample=False, stream_key="f:1"), _long(do_sample=False, stream_key="f:2")
    model.execute([kept, dropped])
    for _ in range(3):
        model.engine.step()
    cancel = Request(kind="cancel", stream_key="f:2")
    model.execute([cancel])
    assert cancel.sender.sent == [(None, FINAL)]
    model.engine.run_until_idle()
    assert dropped.sender.closed and dropped.sender.chunks[-1].finish_reason == "cancelled"
    assert kept.sender.chunks[-1].finish_reason != "cancelled"
    assert model._live == {}  # every sink left the cancellation table when it closed
    model._publish_load()
    assert model.board.load() == 0


def test_a_sink_sends_nothing_after_its_error(adapter) -> None:
    sender = Sender()
    sink = adapter.TritonSink(sender)
    sink.fail(GenerationFaultError("internal error: non-finite values"))
    sink.fail(RuntimeError("again"))
    sink.send(contract.Chunk(0, np.zeros(3, np.float32), 24000, True, "stop"))  # type: ignore[arg-type]
    assert len(sender.sent) == 1 and sender.closed
    assert sink.is_cancelled()


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            InvalidRequestError("unknown speaker 'x'; valid: ryan"),
            "INVALID_ARG",
            "unknown speaker 'x'; valid: ryan",
        ),
        (EngineUnavailableError("out of GPU memory; retry"), "UNAVAILABLE", "out of GPU memory; retry"),
        (GenerationFaultError("internal error: non-finite"), "INTERNAL", "internal error: non-finite"),
        (RuntimeError("Traceback: secret details"), "INTERNAL", "internal error"),
    ],
)
def test_errors_map_to_triton_codes_without_leaking_internals(adapter, error, code, message) -> None:
    assert adapter.error_parts(error) == (code, message)


def _long(**extra: Any) -> Request:
    return Request(
        text="A long sentence to keep the engine busy. " * 4, speaker="ryan", max_new_tokens=120, **extra
    )


def test_finalize_lets_live_streams_finish_and_refuses_new_ones(model) -> None:
    """A drain: the live stream ends with its last chunk and FINAL (not an error); a request that arrives
    meanwhile is refused with UNAVAILABLE at once, so a gateway tries another server."""
    model.drain_timeout_s = 120.0
    live = _long(do_sample=False)
    model.engine.start()
    model.execute([live])
    deadline = time.monotonic() + 60
    while not live.sender.chunks:
        assert time.monotonic() < deadline, "no first chunk"
        time.sleep(0.01)
    finalizer = threading.Thread(target=model.finalize)
    finalizer.start()
    while not model.draining:
        time.sleep(0.001)
    late = _speak()
    model.execute([late])
    assert late.sender.closed and [e.code for e in late.sender.errors] == ["UNAVAILABLE"]
    assert "shutting down; retry" in late.sender.errors[0].message
    assert finalizer.is_alive(), "finalize returned while a stream was live"
    finalizer.join(timeout=120)
    assert not finalizer.is_alive()
    chunks = live.sender.chunks
    assert not live.sender.errors and chunks[-1].is_last and live.sender.sent[-1] == (None, FINAL)


def test_finalize_fails_what_outlives_the_drain_timeout(model) -> None:
    model.drain_timeout_s = 0.2
    live = _long(do_sample=False)
    model.engine.start()
    model.execute([live])
    started = time.monotonic()
    model.finalize()
    assert time.monotonic() - started < 30
    (error,) = live.sender.errors
    assert error.code == "UNAVAILABLE" and live.sender.closed
    assert error.message == contract.SHUTTING_DOWN  # the fronts' words: one message for the one event
