"""What the engine reports for metrics: the tally's cadence, and the engine's calls on the real model."""

from __future__ import annotations

from qwen3_tts_serving.engine.observer import EngineTally, TallySnapshot
from qwen3_tts_serving.engine.requests import Capability, SynthesisRequest
from qwen3_tts_serving.engine.streams import CollectingSink


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_tally_publishes_at_most_every_interval_and_when_idle():
    published: list[TallySnapshot] = []
    clock = FakeClock()
    tally = EngineTally(published.append, interval_s=0.5, clock=clock)
    for _ in range(3):
        tally.step_done(seconds=0.01, frames=4, active=4, queued=1, paused=0)
    tally.first_audio(0.2)
    tally.finished("stop")
    assert not published  # within the interval: kept in memory
    clock.now = 0.6
    tally.step_done(seconds=0.02, frames=2, active=2, queued=0, paused=1)
    (first,) = published
    assert (first.steps, first.frames, first.active, first.queued, first.paused) == (4, 14, 2, 0, 1)
    assert abs(first.step_seconds - 0.05) < 1e-9
    assert first.first_audio_seconds == [0.2] and first.finished == {"stop": 1}
    tally.idle(paused=1)
    second = published[-1]
    assert second.empty and (second.active, second.queued, second.paused) == (0, 0, 1)


class RecordingObserver:
    def __init__(self) -> None:
        self.step_reports: list[dict] = []
        self.first_audio_seconds: list[float] = []
        self.reasons: list[str] = []

    def step_done(self, **figures) -> None:
        self.step_reports.append(figures)

    def first_audio(self, seconds: float) -> None:
        self.first_audio_seconds.append(seconds)

    def finished(self, reason: str) -> None:
        self.reasons.append(reason)

    def idle(self, *, paused: int) -> None:
        pass


def test_the_engine_reports_steps_first_audio_and_endings(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, max_active_streams=2)
    observer = RecordingObserver()
    engine.observer = observer
    sinks = [CollectingSink() for _ in range(3)]
    requests = [
        SynthesisRequest(capability=Capability.CUSTOM_VOICE, text=t, speaker="ryan", language="english")
        for t in ("One, two.", "Three, four.", "Five, six.")
    ]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)])
    engine.run_until_idle()
    assert len(observer.first_audio_seconds) == 3 and all(s > 0 for s in observer.first_audio_seconds)
    assert sorted(observer.reasons) == sorted(sink.finish_reason for sink in sinks)
    assert sum(r["frames"] for r in observer.step_reports) == engine.stats.frames
    assert max(r["active"] for r in observer.step_reports) == 2  # the limit held, the third one waited
    assert any(r["queued"] == 1 for r in observer.step_reports)


def test_mixed_steps_are_counted_and_every_step_and_idle_runs_the_step_hook():
    published: list[TallySnapshot] = []
    hooks: list[int] = []
    clock = FakeClock()
    tally = EngineTally(published.append, interval_s=0.5, clock=clock, on_step=lambda: hooks.append(1))
    tally.step_done(seconds=0.01, frames=2, active=2, queued=0, paused=0, mixed=True)
    tally.step_done(seconds=0.01, frames=2, active=2, queued=0, paused=0)
    assert len(hooks) == 2 and not published  # the hook is cheap and runs every step
    tally.idle(paused=0)
    assert len(hooks) == 3
    (snapshot,) = published
    assert (snapshot.steps, snapshot.mixed_steps) == (2, 1)
