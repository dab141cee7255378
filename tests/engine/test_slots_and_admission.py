"""The engine on slots: joins and leaves copy no other stream's cache, a burst of newcomers is prefilled
within the per-step budget while the speaking streams keep stepping, a full slot ends its stream."""

from __future__ import annotations

import torch
from engine_requests import custom_voice, forced_codebook0
from graph_rehearsal import both_frame_paths

from qwen3_tts_serving.engine.host_sync import ENGINE_READS, HostSyncGuard
from qwen3_tts_serving.engine.requests import Capability, InvalidRequestError, SynthesisRequest
from qwen3_tts_serving.engine.streams import CollectingSink


def _custom(text: str, **sampling: object) -> SynthesisRequest:
    return custom_voice(text, **sampling)


def _submit(engine, *requests: SynthesisRequest) -> list[CollectingSink]:
    sinks = [CollectingSink() for _ in requests]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)])
    return sinks


def _holder(engine, slot: int):
    return engine._holders[slot]


@both_frame_paths
def test_a_join_and_a_leave_leave_the_other_slots_untouched(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, repetition_window=0)
    (speaker,) = _submit(engine, _custom("A speaker who keeps talking for a while.", max_new_tokens=40))
    for _ in range(3):
        engine.step()
    stream = _holder(engine, 0)

    def snapshot() -> list[torch.Tensor]:
        length = stream.cache_length
        return [k[0, :, :length].clone() for k in (*engine.cache.keys, *engine.cache.values)]

    before = snapshot()
    (newcomer,) = _submit(engine, _custom("Joining.", max_new_tokens=30))
    engine.step()
    assert engine.active_count == 2 and _holder(engine, 1) is not stream
    assert all(torch.equal(a, b[:, : a.shape[1]]) for a, b in zip(before, snapshot(), strict=True))

    before = snapshot()
    newcomer.cancelled = True
    engine.step()
    assert engine.active_count == 1 and engine.cache.free_count == engine.config.max_active_streams - 1
    assert all(torch.equal(a, b[:, : a.shape[1]]) for a, b in zip(before, snapshot(), strict=True))
    engine.run_until_idle()
    assert speaker.chunks[-1].is_last and newcomer.finish_reason == "cancelled"


@both_frame_paths
def test_a_burst_of_newcomers_is_prefilled_within_the_budget_while_the_speaker_keeps_stepping(make_engine):
    # A budget below one prompt: one newcomer per step (a prompt over the budget still goes, alone).
    engine = make_engine(Capability.CUSTOM_VOICE, prefill_tokens_per_step=1, repetition_window=0)
    (speaker,) = _submit(engine, _custom("The speaker has a lot to say today.", max_new_tokens=40))
    engine.step()
    stream = _holder(engine, 0)
    burst = _submit(engine, *[_custom(f"Newcomer number {i}.") for i in range(3)])
    for joined in (2, 3, 4):
        frames, calls = stream.frame_count, engine.stats.prefill_calls
        engine.step()
        assert stream.frame_count == frames + 1, "the speaking stream must get its frame every step"
        assert engine.active_count == joined and engine.stats.prefill_calls == calls + 1
    engine.run_until_idle()
    for sink in (speaker, *burst):
        assert sink.error is None and sink.chunks[-1].is_last


@both_frame_paths
def test_a_slot_freed_by_a_cancel_goes_to_the_next_in_line(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, max_active_streams=1)
    first, second = _submit(engine, _custom("First in line."), _custom("Second in line."))
    engine.step()
    assert engine.occupied_slots == 1 and not second.chunks
    first.cancelled = True
    engine.step()
    assert engine.active_count == 1 and _holder(engine, 0).sink is second
    engine.run_until_idle()
    assert first.finish_reason == "cancelled" and second.chunks[-1].is_last


@both_frame_paths
def test_a_full_slot_ends_its_stream_with_reason_length(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, repetition_window=0, frames_per_char=100)
    (probe,) = _submit(engine, _custom("How long is my prompt?", max_new_tokens=3))
    engine.step()
    prompt = _holder(engine, 0).cache_length - 1
    engine.run_until_idle()
    assert probe.chunks[-1].is_last

    with forced_codebook0(engine.tts, 7):  # always code 7: no end-of-speech
        engine = make_engine(
            Capability.CUSTOM_VOICE, repetition_window=0, frames_per_char=100, slot_max_length=prompt + 6
        )
        (sink,) = _submit(engine, _custom("How long is my prompt?", max_new_tokens=400))
        engine.run_until_idle()
    assert sink.finish_reason == "length"
    assert sum(c.audio.shape[0] for c in sink.chunks) // 1920 == 6  # the slot's room after the prompt


def test_a_prompt_longer_than_a_slot_is_refused_naming_the_setting(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, slot_max_length=8)
    (sink,) = _submit(engine, _custom("This prompt takes more than eight talker tokens."))
    engine.run_until_idle()
    assert isinstance(sink.error, InvalidRequestError) and "slot_max_length is 8" in str(sink.error)
    assert engine.cache.free_count == engine.config.max_active_streams


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def test_everything_a_newcomers_prompt_leaves_behind_is_handed_over_to_the_step(make_engine):
    """On a GPU the prompts are built on a stream of their own, so that their host syncs do not wait for
    the frame in flight; every tensor the step and the decoder read later must be in what the build hands
    over, or the allocator could give its memory to the next build while a step still reads it."""
    engine = make_engine(Capability.CUSTOM_VOICE)
    streams = [
        engine.make_stream(engine.validate(_custom(text)), CollectingSink())
        for text in ("A newcomer.", "Another newcomer with a longer sentence to say.")
    ]
    prefill = engine._prefill
    prefill.prepare(streams, lambda _stream: False)
    handed = {_storage(tensor) for tensor in prefill.handed_out}
    kept = [prefill.tts_pad, prefill.tts_eos]
    for stream in streams:
        kept += [stream.prompt_embeds, *stream.text_track._rows]
    assert kept and all(_storage(tensor) in handed for tensor in kept)


PREPARE = "qwen3_tts_serving.engine.prefill.Prefill.prepare"


def test_newcomers_join_the_running_batch_without_waiting_for_its_frame(make_engine):
    """An admission step reads the host only in the prompt build (on a GPU on a stream of its own, so it
    waits for the build and not for the frame in flight) and in the designed uploads: the prefill of
    prompts of different lengths (left-padded) and the join wait for nothing."""
    engine = make_engine(Capability.CUSTOM_VOICE, repetition_window=0)
    speaking = [_custom(f"Speaker {i} has a lot to say.", max_new_tokens=40) for i in range(2)]
    speakers = _submit(engine, *speaking)
    for _ in range(3):
        engine.step()
    newcomers = _submit(engine, _custom("Hi."), _custom("A newcomer with a far longer prompt than that."))
    calls = engine.stats.prefill_calls
    with HostSyncGuard([*ENGINE_READS, PREPARE]) as guard:
        engine.step()
    assert engine.stats.prefill_calls == calls + 1 and engine.active_count == 4
    assert guard.reads[PREPARE] > 0  # the package's own reads, confined to the build
    engine.run_until_idle()
    for sink in (*speakers, *newcomers):
        assert sink.error is None and sink.chunks[-1].is_last
