"""Admission on the real parts (tiny checkpoint): prompts built per group, prefilled into free slots and
joined; whatever fails refuses only the streams it concerns, and a failed prefill gives its slots back."""

from __future__ import annotations

import pytest
import torch
from engine_requests import custom_voice, refusing

from qwen3_tts_serving.engine.requests import Capability, EngineUnavailableError, InvalidRequestError
from qwen3_tts_serving.engine.streams import CollectingSink, Stream


def _streams(engine, *texts: str) -> list[Stream]:
    return [engine.make_stream(engine.validate(custom_voice(text)), CollectingSink()) for text in texts]


def _closed(_stream: Stream) -> bool:
    return False


def test_a_join_seats_each_stream_in_a_slot_of_its_own(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE)
    streams = _streams(engine, "First.", "A second one, with a longer prompt.")
    ready, refused = engine.admission.prepare(streams, _closed)
    assert ready == streams and not refused
    joined, refused = engine.admission.join(ready)
    assert joined == streams and not refused
    assert sorted(s.slot for s in streams) == [0, 1]
    assert engine.frame_step.state.active[:2].all() and not engine.frame_step.state.active[2:].any()
    assert [int(n) for n in engine.cache.lengths[:2]] == [s.prompt_length for s in streams]


def test_a_request_the_package_refuses_is_refused_alone(make_engine, monkeypatch):
    engine = make_engine(Capability.CUSTOM_VOICE)
    monkeypatch.setattr(engine.prompts, "build", refusing(engine.prompts.build, "poison"))
    good, bad, other = _streams(engine, "Fine.", "poison", "Also fine.")
    ready, refused = engine.admission.prepare([good, bad, other], _closed)
    assert ready == [good, other]
    assert [r.stream for r in refused] == [bad] and "refused this text" in str(refused[0].error)


def test_a_prompt_too_long_for_a_slot_is_refused_naming_the_setting(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, slot_max_length=24)
    short, long = _streams(engine, "Hi.", "This prompt takes far more than twenty-four talker tokens.")
    ready, refused = engine.admission.prepare([short, long], _closed)
    assert ready == [short] and [r.stream for r in refused] == [long]
    assert isinstance(refused[0].error, InvalidRequestError)
    assert "slot_max_length is 24" in str(refused[0].error)


def test_out_of_memory_while_building_refuses_the_group_with_a_retry_hint(make_engine, monkeypatch):
    engine = make_engine(Capability.CUSTOM_VOICE)

    def out_of_memory(requests, items=None):  # a GPU allocation failure, simulated: no GPU here
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(engine.prompts, "build", out_of_memory)
    streams = _streams(engine, "One.", "Two.")
    ready, refused = engine.admission.prepare(streams, _closed)
    assert not ready and [r.stream for r in refused] == streams
    assert all(isinstance(r.error, EngineUnavailableError) and "retry" in str(r.error) for r in refused)


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (RuntimeError("a kernel failed"), "prefill failed"),
        (torch.OutOfMemoryError("CUDA out of memory"), "retry shortly"),
    ],
)
def test_a_failed_prefill_gives_its_slots_back(make_engine, monkeypatch, failure, said):
    engine = make_engine(Capability.CUSTOM_VOICE)
    streams = _streams(engine, "One.", "Two.")
    ready, _ = engine.admission.prepare(streams, _closed)
    free = engine.cache.free_count

    def fail(*args):
        raise failure

    monkeypatch.setattr(engine._prefill, "run", fail)
    joined, refused = engine.admission.join(ready)
    assert not joined and [r.stream for r in refused] == streams and said in str(refused[0].error)
    assert engine.cache.free_count == free and not engine.frame_step.state.active.any()
    assert all(s.slot is None for s in streams)
    monkeypatch.undo()
    again = _streams(engine, "Three.")
    ready, _ = engine.admission.prepare(again, _closed)
    joined, refused = engine.admission.join(ready)
    assert joined == again and again[0].slot == 0 and not refused
