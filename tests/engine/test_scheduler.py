"""Admission policy without a model: queue bounds, free slots, the real-time guard, the prefill budget."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.requests import Capability, SamplingParams, SynthesisRequest
from qwen3_tts_serving.engine.scheduler import Scheduler
from qwen3_tts_serving.engine.streams import CollectingSink, Stream


def _scheduler(**overrides: object) -> Scheduler:
    config = replace(EngineConfig(checkpoint_dir=Path(".")), **overrides)  # type: ignore[arg-type]
    return Scheduler(config, threading.Condition())


def _streams(count: int) -> list[Stream]:
    request = SynthesisRequest(capability=Capability.CUSTOM_VOICE, text="x", speaker="ryan")
    return [
        Stream(request=request, sink=CollectingSink(), sampling=SamplingParams(), seed=i, max_frames=10)
        for i in range(count)
    ]


def test_a_full_queue_refuses_the_rest():
    scheduler = _scheduler(max_queued_streams=2)
    streams = _streams(3)
    assert scheduler.submit(streams) == streams[2:]
    assert scheduler.queued == 2


def test_free_slots_are_room_too_less_those_promised_to_prepared_streams():
    """Streams that will take a free slot are not waiting for one: a burst at an idle engine fills the free
    slots and the queue places before anything is refused."""
    scheduler = _scheduler(max_queued_streams=2)
    streams = _streams(6)
    assert scheduler.submit(streams, free_slots=3) == streams[5:]
    scheduler = _scheduler(max_queued_streams=2)
    scheduler.prepared.append(_streams(1)[0])  # promised one of the free slots
    assert scheduler.submit(streams, free_slots=3) == streams[4:]


def test_admission_fills_free_slots_oldest_first_and_keeps_the_rest_in_order():
    scheduler = _scheduler()
    streams = _streams(5)
    scheduler.submit(streams)
    scheduler.prepared.append(_streams(1)[0])  # prompt built, its prefill still to come
    assert scheduler.admit(free_slots=3, active=0, leaves_queue=lambda s: s is streams[0]) == []
    scheduler.prepared.clear()  # prefilled: it holds a slot now
    assert scheduler.admit(free_slots=2, active=0, leaves_queue=lambda s: False) == streams[1:3]
    assert scheduler.admit(free_slots=10, active=0, leaves_queue=lambda s: False) == streams[3:]


def test_prompts_are_built_for_as_many_newcomers_as_the_prefill_budget_holds():
    scheduler = _scheduler(prefill_tokens_per_step=500)
    streams = _streams(4)
    for stream, length in zip(streams, (300, 100, 200, 1000), strict=True):
        stream.request = replace(stream.request, text="x" * length)
    scheduler.submit(streams)
    # 300 + 32, then 100 + 32 fit; 200 + 32 more would not. Over the budget alone still goes.
    assert scheduler.admit(free_slots=8, active=0, leaves_queue=lambda s: False) == streams[:2]
    assert scheduler.admit(free_slots=8, active=0, leaves_queue=lambda s: False) == streams[2:3]
    assert scheduler.admit(free_slots=8, active=0, leaves_queue=lambda s: False) == streams[3:]


def test_no_newcomer_while_frames_are_slower_than_the_realtime_budget():
    scheduler = _scheduler(realtime_step_budget_s=0.05)
    scheduler.submit(_streams(2))
    scheduler.track_frame_time(0.08)
    assert scheduler.admit(free_slots=4, active=1, leaves_queue=lambda s: False) == []
    assert scheduler.admit(free_slots=4, active=0, leaves_queue=lambda s: False) != []  # nobody to protect


def test_prefill_is_bounded_per_step_by_the_padded_token_budget():
    scheduler = _scheduler(prefill_tokens_per_step=250)
    lengths = [100, 100, 300, 50, 60]
    streams = _streams(len(lengths))
    scheduler.prepared.extend(streams)
    length_of = dict(zip(map(id, streams), lengths, strict=True))

    def length(stream: Stream) -> int:
        return length_of[id(stream)]

    batches = []
    while scheduler.prepared:
        batches.append([length(s) for s in scheduler.next_prefill(length)])
    # 2 x 100 fits, 3 x 300 does not; a prompt over the budget still goes, alone; 2 x 60 fits.
    assert batches == [[100, 100], [300], [50, 60]]
