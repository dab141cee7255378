"""The sessions module on its own, with a recording stand-in for the engine (the engine-level behaviour
is in test_sessions.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from qwen3_tts_serving.contract import ErrorKind, classify_error
from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.requests import (
    Capability,
    EngineUnavailableError,
    InvalidRequestError,
    SamplingParams,
    SynthesisRequest,
)
from qwen3_tts_serving.engine.sessions import Sessions
from qwen3_tts_serving.engine.streams import CollectingSink, Stream, TextTrack


class _Host:
    def __init__(self) -> None:
        self.commands: list[Callable[[], None]] = []
        self.events: list[tuple[str, Stream]] = []
        self.waiting: set[int] = set()

    def run_in_engine(self, command: Callable[[], None]) -> None:
        self.commands.append(command)

    def run(self) -> None:
        commands, self.commands = self.commands, []
        for command in commands:
            command()

    def enqueue(self, stream: Stream) -> None:
        self.events.append(("enqueue", stream))

    def end_unstarted(self, stream: Stream) -> None:
        self.events.append(("end_unstarted", stream))

    def end_waiting(self, stream: Stream) -> None:
        self.events.append(("end_waiting", stream))

    def is_waiting(self, stream: Stream) -> bool:
        return id(stream) in self.waiting

    def text_embeddings(self, text: str) -> torch.Tensor:
        return torch.ones(len(text), 2)

    def end_of_text(self) -> torch.Tensor:
        return torch.full((2,), -1.0)

    def text_grew(self, stream: Stream, closed: bool) -> None:
        self.events.append(("closed" if closed else "grew", stream))


def _sessions(**overrides: object) -> tuple[Sessions, _Host]:
    config = replace(EngineConfig(checkpoint_dir=Path(".")), **overrides)  # type: ignore[arg-type]
    host = _Host()
    return Sessions(config, threading.Condition(), host), host


def _stream(text: str = "") -> Stream:
    request = SynthesisRequest(capability=Capability.CUSTOM_VOICE, text=text, speaker="ryan", text_open=True)
    return Stream(request=request, sink=CollectingSink(), sampling=SamplingParams(), seed=0, max_frames=10)


def test_a_session_starts_when_its_first_text_arrives_and_then_grows_its_track():
    sessions, host = _sessions()
    stream = _stream()
    sessions.open([(1, stream, False)])
    host.run()
    assert host.events == []  # nothing to say yet: not queued
    sessions.append(1, "Hello there. ")
    host.run()
    assert host.events == [("enqueue", stream)] and stream.request.text.startswith("Hello there.")
    stream.text_track = TextTrack(torch.zeros(0, 2), closed=False)  # prefilled meanwhile
    sessions.append(1, "More words", close=True)
    host.run()
    assert host.events[-1] == ("closed", stream)
    assert stream.text_track.closed and stream.text_track.pending > 1  # the words, then end-of-text
    with pytest.raises(InvalidRequestError, match="session 1's input is closed"):
        sessions.append(1, "late")  # it still speaks: "no open session" would say it had ended


def test_sessions_waiting_for_their_first_text_are_bounded_by_the_slots_and_the_queue():
    """Each is a promise of a slot; unbounded, a client could open them by the thousand. Once one has text
    (it joins the queue, bounded there) or ends, another may wait."""
    sessions, host = _sessions(max_active_streams=2, max_queued_streams=1)
    streams = [_stream() for _ in range(4)]
    sessions.open([(key, stream, False) for key, stream in enumerate(streams)])
    host.run()
    assert [stream.sink.error is None for stream in streams] == [True, True, True, False]
    assert isinstance(streams[3].sink.error, EngineUnavailableError)
    assert "too many sessions wait for their first text (3, the most this engine holds); retry" in str(
        streams[3].sink.error
    )
    assert classify_error(str(streams[3].sink.error)) is ErrorKind.OVERLOADED  # the retryable kind
    sessions.append(0, "Hello there. ")
    host.run()  # session 0 has its text: it waits in the admission queue now, not for text
    later = _stream()
    sessions.open([(9, later, False)])
    assert later.sink.error is None


def test_a_duplicate_key_and_an_overlong_text_are_refused():
    sessions, host = _sessions(max_text_length=10)
    first, second = _stream(), _stream()
    sessions.open([(4, first, False)])
    sessions.open([(4, second, False)])
    assert isinstance(second.sink.error, InvalidRequestError)
    with pytest.raises(InvalidRequestError, match="the limit is 10"):
        sessions.append(4, "x" * 11)


def test_a_session_closed_without_text_ends_without_audio():
    sessions, host = _sessions()
    stream = _stream()
    sessions.open([(2, stream, True)])
    host.run()
    assert host.events == [("end_unstarted", stream)] and stream.finish_reason is not None


def test_only_waiting_sessions_expire():
    sessions, host = _sessions(session_idle_timeout_s=0.05)
    waiting, paused, stepping = _stream("a"), _stream("b"), _stream("c")
    sessions.open([(1, waiting, False), (2, paused, True), (3, stepping, True)])
    host.run()  # "a" waits for more text; "b" and "c" are complete, so queued
    assert [stream for _, stream in host.events] == [paused, stepping]
    host.events.clear()
    host.waiting.add(id(paused))  # "b" stepped, then paused (cannot happen to a closed text; stand-in)
    time.sleep(0.1)
    sessions.expire()
    assert host.events == [("end_waiting", waiting), ("end_waiting", paused)]
    assert waiting.finish_reason is not None and waiting.finish_reason.value == "idle_timeout"
    assert stepping.finish_reason is None
