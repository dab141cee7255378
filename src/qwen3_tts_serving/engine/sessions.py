"""Voice-agent sessions: streams whose text keeps arriving after they started (Triton sequence = session).

Intake (``open``, ``append``) runs on the caller's thread and only queues work; the text itself is taken
on the engine thread (``take_text``), which commits what is stable, grows the talker's text track, wakes
a stream paused for text and ends sessions that went idle or whose client left. What a session needs of
the engine goes through ``SessionHost``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..contract import no_open_session
from .config import EngineConfig
from .requests import EngineUnavailableError, FinishReason, InvalidRequestError
from .streams import Stream
from .text_feed import IncrementalText


@dataclass(eq=False)
class Session:
    """A voice-agent stream whose text is still arriving."""

    stream: Stream
    feed: IncrementalText
    last_text_at: float
    queued: bool = False  # handed to the admission queue (it had text to start with)
    closed: bool = False  # the client sent END (checked when more text is offered)
    input_closed: bool = False  # END has reached the engine thread (decides the end-of-text marker)


class SessionHost(Protocol):
    """What sessions need of the engine (engine thread unless said otherwise)."""

    def run_in_engine(self, command: Callable[[], None]) -> None: ...  # any thread

    def enqueue(self, stream: Stream) -> None: ...  # into the admission queue

    def end_unstarted(self, stream: Stream) -> None: ...  # an end without audio (finish_reason set)

    def end_waiting(self, stream: Stream) -> None: ...  # a paused or unstarted stream ends (reason set)

    def is_waiting(self, stream: Stream) -> bool: ...  # paused for text (holding its slot)

    def text_embeddings(self, text: str) -> torch.Tensor: ...  # [N, D] for the talker's text track

    def end_of_text(self) -> torch.Tensor: ...  # [D]

    def text_grew(self, stream: Stream, closed: bool) -> None: ...  # resume it; ``closed``: END arrived


class Sessions:
    def __init__(self, config: EngineConfig, lock: threading.Condition, host: SessionHost) -> None:
        self._config = config
        self._lock = lock
        self._host = host
        self._by_key: dict[int, Session] = {}

    def __contains__(self, key: int) -> bool:
        return key in self._by_key

    def __bool__(self) -> bool:
        return bool(self._by_key)

    @property
    def waiting_to_start(self) -> int:
        """Open sessions not yet handed to admission (waiting for enough text): each will want a slot."""
        return sum(not session.queued for session in list(self._by_key.values()))

    # ------------------------------------------------------------------------------- any thread
    @property
    def max_waiting_to_start(self) -> int:
        """Sessions an engine keeps waiting for their first text: as many as it holds in slots and queue.
        They hold neither until their text comes, but each is a promise of one; unbounded, a client could
        open them by the thousand (the sequence batcher used to bound them by its slots)."""
        return self._config.max_active_streams + self._config.max_queued_streams

    def open(self, entries: list[tuple[int, Stream, bool]]) -> None:
        """Start sessions (key, stream, input already closed); their text may keep arriving."""
        with self._lock:
            for key, stream, closed in entries:
                if key in self._by_key:
                    stream.sink.fail(InvalidRequestError(f"session {key} is already running"))
                    continue
                if self.waiting_to_start >= self.max_waiting_to_start:
                    stream.sink.fail(
                        EngineUnavailableError(
                            f"too many sessions wait for their first text ({self.max_waiting_to_start}, "
                            "the most this engine holds); retry shortly"
                        )
                    )
                    continue
                stream.session_key = key
                if stream.lookahead is None:
                    stream.lookahead = self._config.session_lookahead_tokens
                session = Session(
                    stream=stream, feed=IncrementalText(), last_text_at=time.monotonic(), closed=closed
                )
                self._by_key[key] = session
                first_text, stream.request.text = stream.request.text, ""
                self._host.run_in_engine(
                    lambda s=session, t=first_text, c=closed: self.take_text(s, t, False, c)
                )

    def append(self, key: int, fragment: str, *, flush: bool = False, close: bool = False) -> None:
        """Queue text for a running session; raises InvalidRequestError for an unknown or finished one."""
        with self._lock:
            session = self._by_key.get(key)
            if session is None:
                raise InvalidRequestError(no_open_session(key))
            if session.closed:  # still speaking: "no open session" would say it had ended
                raise InvalidRequestError(
                    f"session {key}'s input is closed (its end came): open a new session for more text"
                )
            total, limit = len(session.feed.received) + len(fragment), self._config.max_text_length
            if total > limit:
                raise InvalidRequestError(
                    f"session text would reach {total} characters; the limit is {limit}"
                )
            session.closed = close
        self._host.run_in_engine(lambda: self.take_text(session, fragment, flush, close))

    def forget(self, stream: Stream) -> None:
        if stream.session_key is not None:
            with self._lock:
                session = self._by_key.get(stream.session_key)
                if session is not None and session.stream is stream:
                    del self._by_key[stream.session_key]

    def drain_unqueued(self) -> list[Stream]:
        """Forget every session; return the streams not yet handed to admission (shutting down)."""
        with self._lock:
            unqueued = [session.stream for session in self._by_key.values() if not session.queued]
            self._by_key.clear()
        return unqueued

    # -------------------------------------------------------------------------------- engine thread
    def input_open(self, stream: Stream) -> bool:
        session = self._by_key.get(stream.session_key) if stream.session_key is not None else None
        return session is not None and not session.input_closed

    def take_text(self, session: Session, fragment: str, flush: bool, close: bool) -> None:
        """Commit what is stable, then feed the talker's text track or start the stream."""
        stream = session.stream
        if stream.finished:
            return
        session.last_text_at = time.monotonic()
        session.input_closed = session.input_closed or close
        piece = session.feed.feed(fragment, flush=flush, close=close)
        stream.max_frames = self._config.frame_budget(
            session.feed.received, stream.sampling.max_new_tokens, stream.request.language
        )
        track = stream.text_track
        if track is None:  # not prefilled yet: the prompt will hold all text committed until then
            stream.request.text += piece
            if not session.queued and stream.request.text.strip():
                session.queued = True
                self._host.enqueue(stream)
            elif not session.queued and close:
                stream.finish_reason = FinishReason.STOP  # the session ended without anything to say
                self._host.end_unstarted(stream)
            return
        if piece:
            track.append(self._host.text_embeddings(piece))
        if close:
            track.close(self._host.end_of_text())
        self._host.text_grew(stream, close)

    def expire(self) -> None:
        """End sessions whose client left or whose text stopped coming while they wait for it."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._by_key.values())
        for session in sessions:
            stream = session.stream
            waiting = not session.queued or self._host.is_waiting(stream)
            if not waiting or stream.finished:
                continue
            if stream.sink.is_cancelled():
                stream.finish_reason = FinishReason.CANCELLED
            elif now - session.last_text_at > self._config.session_idle_timeout_s:
                stream.finish_reason = FinishReason.IDLE_TIMEOUT
            else:
                continue
            self._host.end_waiting(stream)
