"""What the engine reports as it runs, for metrics; nothing here knows about Triton.

The engine calls an ``EngineObserver`` on its own thread: once per step, when a stream's first audio
leaves, when a stream ends, and when it goes idle. ``EngineTally`` accumulates those in memory and hands
them to a ``publish`` callback at most every ``interval_s`` (and when the engine goes idle), so that a
metrics backend whose updates are costly (Triton's are IPC messages) is touched a few times a second, not
once per frame.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class EngineObserver(Protocol):
    def step_done(
        self, *, seconds: float, frames: int, active: int, queued: int, paused: int, mixed: bool = False
    ) -> None:
        """A step made ``frames`` frames; ``mixed``: its batch held plain streams and sessions together."""
        ...

    def first_audio(self, seconds: float) -> None:
        """A stream's first audio left, ``seconds`` after the stream entered the engine's queue."""
        ...

    def finished(self, reason: str) -> None: ...

    def idle(self, *, paused: int) -> None:
        """Nothing left to step (``paused`` sessions wait for text)."""
        ...


class NullObserver:
    def step_done(
        self, *, seconds: float, frames: int, active: int, queued: int, paused: int, mixed: bool = False
    ) -> None:
        pass

    def first_audio(self, seconds: float) -> None:
        pass

    def finished(self, reason: str) -> None:
        pass

    def idle(self, *, paused: int) -> None:
        pass


class Observers:
    """Several observers as one: each hears every event, in order."""

    def __init__(self, *observers: EngineObserver) -> None:
        self.observers = observers

    def step_done(
        self, *, seconds: float, frames: int, active: int, queued: int, paused: int, mixed: bool = False
    ) -> None:
        for observer in self.observers:
            observer.step_done(
                seconds=seconds, frames=frames, active=active, queued=queued, paused=paused, mixed=mixed
            )

    def first_audio(self, seconds: float) -> None:
        for observer in self.observers:
            observer.first_audio(seconds)

    def finished(self, reason: str) -> None:
        for observer in self.observers:
            observer.finished(reason)

    def idle(self, *, paused: int) -> None:
        for observer in self.observers:
            observer.idle(paused=paused)


@dataclass
class TallySnapshot:
    """What happened since the last publication (counts) and the state now (gauges)."""

    steps: int = 0
    mixed_steps: int = 0  # steps whose batch held plain streams and voice-agent sessions together
    frames: int = 0
    step_seconds: float = 0.0
    first_audio_seconds: list[float] = field(default_factory=list)
    finished: Counter[str] = field(default_factory=Counter)
    active: int = 0
    queued: int = 0
    paused: int = 0

    @property
    def empty(self) -> bool:
        return not (self.steps or self.first_audio_seconds or self.finished)


class EngineTally:
    """An ``EngineObserver`` that batches what it sees and publishes it every ``interval_s``.

    ``on_step`` runs after every step and when the engine goes idle (cheap work only: the engine's load
    board)."""

    def __init__(
        self,
        publish: Callable[[TallySnapshot], None],
        *,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self._publish = publish
        self._on_step = on_step
        self._interval_s = interval_s
        self._clock = clock
        self._pending = TallySnapshot()
        self._last_published = clock()

    def step_done(
        self, *, seconds: float, frames: int, active: int, queued: int, paused: int, mixed: bool = False
    ) -> None:
        pending = self._pending
        pending.steps += 1
        pending.mixed_steps += mixed
        pending.frames += frames
        pending.step_seconds += seconds
        pending.active, pending.queued, pending.paused = active, queued, paused
        if self._on_step is not None:
            self._on_step()
        if self._clock() - self._last_published >= self._interval_s:
            self.flush()

    def first_audio(self, seconds: float) -> None:
        self._pending.first_audio_seconds.append(seconds)

    def finished(self, reason: str) -> None:
        self._pending.finished[reason] += 1

    def idle(self, *, paused: int) -> None:
        self._pending.active = self._pending.queued = 0
        self._pending.paused = paused
        if self._on_step is not None:
            self._on_step()
        self.flush()

    def flush(self) -> None:
        snapshot = self._pending
        self._pending = TallySnapshot(active=snapshot.active, queued=snapshot.queued, paused=snapshot.paused)
        self._last_published = self._clock()
        self._publish(snapshot)
