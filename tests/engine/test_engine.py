"""The streaming engine on the real qwen-tts model code (tiny random checkpoints), without Triton."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from engine_requests import custom_voice, forced_codebook0, refusing, run_to_end
from graph_rehearsal import both_frame_paths

from qwen3_tts_serving.engine.engine import is_repeating
from qwen3_tts_serving.engine.requests import (
    Capability,
    EngineUnavailableError,
    InvalidRequestError,
    SynthesisRequest,
)
from qwen3_tts_serving.engine.slot_cache import SlotKVCache
from qwen3_tts_serving.engine.streams import CollectingSink

GREEDY = {"do_sample": False, "repetition_penalty": 1.05}
# Chunked decoding with a left context covering the whole utterance equals one decode up to float
# rounding in the decoder's convolutions: this is the tolerance we state in the README.
AUDIO_ATOL = 1e-4


def _custom(text: str, **sampling: object) -> SynthesisRequest:
    return custom_voice(text, **{**GREEDY, **sampling})


def _package_greedy(load_tts, text: str, *, frames: int):
    """The package's own non-streaming greedy output for ``_custom(text)`` (``frames`` new frames at most:
    the package needs one token more, see the qwen-tts notes)."""
    return load_tts(Capability.CUSTOM_VOICE).generate_custom_voice(
        text=text,
        speaker="ryan",
        language="english",
        do_sample=False,
        subtalker_dosample=False,
        repetition_penalty=GREEDY["repetition_penalty"],
        max_new_tokens=frames + 1,
    )


def _reference_clip(seconds: float = 3.5, rate: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("decoder_mode", "code_predictor"), [("streaming", "static"), ("windowed", "reference")]
)
def test_greedy_stream_equals_package_output(make_engine, load_tts, decoder_mode, code_predictor):
    engine = make_engine(
        Capability.CUSTOM_VOICE,
        max_new_tokens=120,
        frames_per_char=50,
        decoder_mode=decoder_mode,
        code_predictor=code_predictor,
    )
    text = "Hello there, this is a streaming test."
    (sink,) = run_to_end(engine, [_custom(text)])
    wavs, rate = _package_greedy(load_tts, text, frames=120)
    streamed = sink.audio()
    assert rate == 24000
    assert len(sink.chunks) > 1, "expected several chunks, not one finished waveform"
    assert streamed.shape == wavs[0].shape
    np.testing.assert_allclose(streamed, wavs[0], atol=AUDIO_ATOL)


@both_frame_paths
def test_voice_design_and_clone_match_package(make_engine, load_tts):
    design = make_engine(Capability.VOICE_DESIGN, frames_per_char=50)
    request = SynthesisRequest(
        capability=Capability.VOICE_DESIGN,
        text="A designed voice.",
        instruct="a deep calm voice",
        language="english",
        sampling=dict(GREEDY),
    )
    (sink,) = run_to_end(design, [request])
    wavs, _ = load_tts(Capability.VOICE_DESIGN).generate_voice_design(
        text=request.text,
        instruct=request.instruct,
        language="english",
        do_sample=False,
        subtalker_dosample=False,
    )
    np.testing.assert_allclose(sink.audio(), wavs[0], atol=AUDIO_ATOL)

    # The package decodes reference + generated codes in one pass: give our chunks the same context
    # (the reference alone is ~44 frames) so the comparison is exact rather than context-limited.
    clone = make_engine(Capability.VOICE_CLONE, frames_per_char=50, decoder_left_context_frames=256)
    clip = _reference_clip()
    request = SynthesisRequest(
        capability=Capability.VOICE_CLONE,
        text="Cloned speech.",
        language="english",
        ref_audio=clip,
        ref_sample_rate=24000,
        ref_text="The reference transcript.",
        sampling=dict(GREEDY),
    )
    (sink,) = run_to_end(clone, [request])
    wavs, _ = load_tts(Capability.VOICE_CLONE).generate_voice_clone(
        text=request.text,
        language="english",
        ref_audio=(clip, 24000),
        ref_text=request.ref_text,
        do_sample=False,
        subtalker_dosample=False,
    )
    np.testing.assert_allclose(sink.audio(), wavs[0], atol=AUDIO_ATOL)


@both_frame_paths
def test_greedy_output_is_the_same_alone_and_batched(make_engine):
    texts = ["Short.", "A somewhat longer sentence to speak here.", "Medium length text."]
    alone = [run_to_end(make_engine(Capability.CUSTOM_VOICE), [_custom(t)])[0].audio() for t in texts]
    batched = run_to_end(make_engine(Capability.CUSTOM_VOICE), [_custom(t) for t in texts])
    for solo, together in zip(alone, batched, strict=True):
        np.testing.assert_allclose(together.audio(), solo, atol=AUDIO_ATOL)


@both_frame_paths
def test_seeded_sampling_is_the_same_alone_and_batched(make_engine):
    request = _custom("Sampling with a seed.", do_sample=True, seed=1234)
    alone = run_to_end(make_engine(Capability.CUSTOM_VOICE), [request])[0].audio()
    others = [_custom("Another one.", do_sample=True, seed=5), _custom("Third.", do_sample=True)]
    together = run_to_end(make_engine(Capability.CUSTOM_VOICE), [request, *others])[0].audio()
    np.testing.assert_allclose(together, alone, atol=AUDIO_ATOL)
    reseeded = _custom(request.text, do_sample=True, seed=99)
    different = run_to_end(make_engine(Capability.CUSTOM_VOICE), [reseeded])
    assert different[0].audio().shape != alone.shape or not np.allclose(different[0].audio(), alone)


@both_frame_paths
def test_chunks_are_numbered_and_the_first_comes_early(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, first_chunk_frames=1, chunk_frames=3, frames_per_char=50)
    (sink,) = run_to_end(engine, [_custom("Numbered chunks for this test.")])
    assert [c.sequence for c in sink.chunks] == list(range(len(sink.chunks)))
    assert [c.is_last for c in sink.chunks] == [False] * (len(sink.chunks) - 1) + [True]
    assert all(c.sample_rate == 24000 for c in sink.chunks)
    frames = [c.audio.shape[0] // 1920 for c in sink.chunks[:-1]]
    assert frames[:4] == [1, 1, 2, 3] and set(frames[3:]) == {3}  # first size twice, doubling, capped
    assert all(c.audio.shape[0] % 1920 == 0 for c in sink.chunks)
    assert sink.finish_reason in ("stop", "length", "repetition")


@both_frame_paths
def test_a_newcomer_joins_the_running_batch(make_engine):
    engine = make_engine(
        Capability.CUSTOM_VOICE, max_new_tokens=400, frames_per_char=100, repetition_window=0
    )
    long_sink, late_sink = CollectingSink(), CollectingSink()
    long_request = _custom("This one is long. " * 4, max_new_tokens=300)
    engine.submit([engine.make_stream(engine.validate(long_request), long_sink)])
    for _ in range(5):
        engine.step()
    assert engine.active_count == 1
    engine.submit([engine.make_stream(engine.validate(_custom("Late.")), late_sink)])
    engine.step()
    assert engine.active_count == 2, "the newcomer must join at the next frame"
    while not late_sink.chunks:
        engine.step()
    assert not long_sink.done.is_set(), "the newcomer's first audio must not wait for the long stream"
    steps_before = engine.stats.steps
    engine.run_until_idle()
    assert engine.stats.frames > engine.stats.steps - steps_before  # some steps carried both streams


@both_frame_paths
def test_cancelled_stream_leaves_within_a_frame(make_engine):
    engine = make_engine(
        Capability.CUSTOM_VOICE, max_new_tokens=400, frames_per_char=100, repetition_window=0
    )
    keep, cancel = CollectingSink(), CollectingSink()
    requests = [_custom("Keep going for a while please.", max_new_tokens=200), _custom("Cancel me soon.")]
    engine.submit(
        [engine.make_stream(engine.validate(r), s) for r, s in zip(requests, (keep, cancel), strict=False)]
    )
    engine.step()
    engine.step()
    assert engine.active_count == 2
    cancel.cancelled = True
    engine.step()
    assert engine.active_count == 1
    assert cancel.chunks[-1].is_last and cancel.chunks[-1].finish_reason == "cancelled"
    engine.run_until_idle()
    assert keep.chunks[-1].is_last


def test_invalid_requests_name_the_valid_choices(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE)
    with pytest.raises(InvalidRequestError, match="valid: .*ryan"):
        engine.validate(SynthesisRequest(capability=Capability.CUSTOM_VOICE, text="x", speaker="nobody"))
    with pytest.raises(InvalidRequestError, match="valid: auto, .*english"):
        engine.validate(SynthesisRequest(Capability.CUSTOM_VOICE, text="x", speaker="ryan", language="xx"))
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.validate(SynthesisRequest(Capability.CUSTOM_VOICE, text="  ", speaker="ryan"))
    # Nothing visible is blank too, as at the gateway (text_rules.is_blank): zero-width space, word joiner.
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.validate(SynthesisRequest(Capability.CUSTOM_VOICE, text="\u200b \u2060", speaker="ryan"))
    joined = "\U0001f469\u200d\U0001f4bb"  # an emoji sequence joined by U+200D is visible
    engine.validate(SynthesisRequest(Capability.CUSTOM_VOICE, text=joined, speaker="ryan"))
    with pytest.raises(InvalidRequestError, match="limit"):
        engine.validate(SynthesisRequest(Capability.CUSTOM_VOICE, text="x" * 5000, speaker="ryan"))
    long_instruct = SynthesisRequest(Capability.CUSTOM_VOICE, text="x", speaker="ryan", instruct="y" * 5000)
    with pytest.raises(InvalidRequestError, match="instruct has 5000 characters; the limit is"):
        engine.validate(long_instruct)
    with pytest.raises(InvalidRequestError, match="top_p"):
        engine.make_stream(_custom("x", top_p=1.5), CollectingSink())


def test_short_reference_clip_is_rejected_with_the_minimum(make_engine):
    engine = make_engine(Capability.VOICE_CLONE)
    request = SynthesisRequest(
        Capability.VOICE_CLONE, text="x", ref_audio=_reference_clip(1.0), ref_sample_rate=24000
    )
    with pytest.raises(InvalidRequestError, match="at least 3 s"):
        engine.validate(request)


@both_frame_paths
@pytest.mark.parametrize(
    ("favourite", "window", "expected"),
    [("eos", 24, "stop"), (7, 6, "repetition"), (7, 0, "length")],
)
def test_finish_reasons(make_engine, load_tts, favourite, window, expected):
    tts = load_tts(Capability.CUSTOM_VOICE)
    code = int(tts.model.config.talker_config.codec_eos_token_id) if favourite == "eos" else favourite
    with forced_codebook0(tts, code):
        engine = make_engine(Capability.CUSTOM_VOICE, repetition_window=window, max_new_tokens=30)
        (sink,) = run_to_end(engine, [_custom("Forced.")])
    assert sink.finish_reason == expected
    frames = sum(c.audio.shape[0] for c in sink.chunks) // 1920
    if expected == "stop":
        assert frames == 2  # end-of-speech is held back for the first two tokens, as in the package
    if expected == "length":
        assert frames == engine.config.frame_budget("Forced.", 30)


def test_is_repeating():
    assert is_repeating([1, 2] * 6, 12)
    assert is_repeating([5] * 8, 8)
    assert not is_repeating(list(range(12)), 12)
    assert not is_repeating([5] * 3, 8)
    assert not is_repeating([5] * 10, 0)


@both_frame_paths
def test_out_of_memory_fails_the_step_with_a_retry_hint_and_serving_goes_on(make_engine, monkeypatch):
    engine = make_engine(Capability.CUSTOM_VOICE)
    sinks = [CollectingSink(), CollectingSink()]
    requests = [_custom("A."), _custom("B.")]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)])
    engine.step()

    def out_of_memory(*args):  # a GPU allocation failure in the frame step, simulated: no GPU here
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine.frame_step, "launch", out_of_memory)
    engine.step()
    for sink in sinks:
        assert isinstance(sink.error, EngineUnavailableError) and "retry" in str(sink.error)
    assert engine.active_count == 0
    monkeypatch.undo()
    (sink,) = run_to_end(engine, [_custom("Serving again.")])
    assert sink.chunks[-1].is_last


def test_a_request_the_package_refuses_does_not_fail_its_batch(make_engine, monkeypatch):
    engine = make_engine(Capability.CUSTOM_VOICE)
    monkeypatch.setattr(engine.prompts, "build", refusing(engine.prompts.build, "poison"))
    good, bad = CollectingSink(), CollectingSink()
    engine.submit(
        [engine.make_stream(engine.validate(_custom(t)), s) for t, s in (("Fine.", good), ("poison", bad))]
    )
    engine.run_until_idle()
    assert "refused" in str(bad.error)
    assert good.error is None and good.chunks[-1].is_last


def test_out_of_memory_while_decoding_fails_the_step_and_serving_goes_on(make_engine, monkeypatch):
    engine = make_engine(Capability.CUSTOM_VOICE)
    sink = CollectingSink()
    engine.submit([engine.make_stream(engine.validate(_custom("Decode me.")), sink)])

    def out_of_memory(streams):  # a GPU allocation failure in the codec decoder, simulated
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(engine.decoder, "decode_streams", out_of_memory)
    for _ in range(3):  # the first chunk is due after two frames
        engine.step()
    assert isinstance(sink.error, EngineUnavailableError) and "retry" in str(sink.error)
    assert engine.active_count == 0
    monkeypatch.undo()
    (again,) = run_to_end(engine, [_custom("Serving again.")])
    assert again.chunks[-1].is_last


def test_a_full_queue_refuses_at_once_and_a_long_wait_fails_with_a_retry_hint(make_engine):
    engine = make_engine(
        Capability.CUSTOM_VOICE, max_active_streams=1, max_queued_streams=2, max_queue_wait_s=0.2
    )
    sinks = [CollectingSink() for _ in range(4)]
    streams = [engine.make_stream(engine.validate(_custom(f"Request {i}.")), s) for i, s in enumerate(sinks)]
    engine.submit(streams[:2])
    engine.step()  # request 0 takes the only slot; request 1 waits
    engine.submit(streams[2:])  # request 2 fills the queue (two waiting), request 3 finds it full
    assert isinstance(sinks[3].error, EngineUnavailableError)
    assert "queue is full (2 requests waiting); retry" in str(sinks[3].error)
    time.sleep(0.3)  # longer than max_queue_wait_s while the slot is busy
    engine.run_until_idle()
    assert sinks[0].error is None and sinks[0].chunks[-1].is_last
    for sink in sinks[1:3]:
        assert isinstance(sink.error, EngineUnavailableError) and "no free slot within 0.2 s" in str(
            sink.error
        )
        assert not sink.chunks


def test_a_request_cancelled_while_it_waits_is_ended_without_a_prefill(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, max_active_streams=1)
    first, waiting = CollectingSink(), CollectingSink()
    engine.submit(
        [engine.make_stream(engine.validate(_custom(t)), s) for t, s in (("One.", first), ("Two.", waiting))]
    )
    engine.step()
    waiting.cancelled = True
    prefilled = engine.stats.prefilled_requests
    engine.run_until_idle()
    assert (
        waiting.finish_reason == "cancelled" and len(waiting.chunks) == 1 and not waiting.chunks[0].audio.size
    )
    assert engine.stats.prefilled_requests == prefilled, "a cancelled request must not be prefilled"
    assert first.chunks[-1].is_last


@both_frame_paths
def test_a_long_greedy_stream_equals_package_output(make_engine, load_tts):
    # Long enough that the talker's key/value buffers grow several times while it speaks.
    text = " ".join(["Streaming keeps going while the buffers grow."] * 6)
    engine = make_engine(Capability.CUSTOM_VOICE, frames_per_char=50, repetition_window=0)
    (sink,) = run_to_end(engine, [_custom(text, max_new_tokens=400)])
    wavs, _ = _package_greedy(load_tts, text, frames=400)
    frames = sink.audio().size // 1920
    assert frames > 100, frames
    np.testing.assert_allclose(sink.audio(), wavs[0], atol=AUDIO_ATOL)


def test_newcomers_wait_while_frames_are_slower_than_the_realtime_budget(make_engine, monkeypatch):
    engine = make_engine(Capability.CUSTOM_VOICE, realtime_step_budget_s=0.05, repetition_window=0)
    advance = engine._advance

    def slow_advance():  # a machine that cannot keep up: 60 ms per frame against a 50 ms budget
        advance()
        time.sleep(0.06)

    monkeypatch.setattr(engine, "_advance", slow_advance)
    first, second = CollectingSink(), CollectingSink()
    engine.submit(
        [engine.make_stream(engine.validate(_custom("The first one speaks.", max_new_tokens=12)), first)]
    )
    engine.step()
    engine.step()  # a frame has been timed: over budget
    engine.submit([engine.make_stream(engine.validate(_custom("The second waits.")), second)])
    while not first.done.is_set():
        engine.step()
        assert engine.active_count <= 1 and not second.chunks, "admitted while the first was behind real time"
    engine.run_until_idle()  # alone again: the second one runs
    assert second.chunks[-1].is_last and second.error is None
    assert second.chunks[0] and first.chunks[-1].is_last


def test_newcomers_join_at_once_while_frames_are_within_the_budget(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, realtime_step_budget_s=5.0, repetition_window=0)
    first, second = CollectingSink(), CollectingSink()
    engine.submit(
        [engine.make_stream(engine.validate(_custom("The first one speaks.", max_new_tokens=12)), first)]
    )
    engine.step()
    engine.step()
    engine.submit([engine.make_stream(engine.validate(_custom("The second joins.")), second)])
    engine.step()
    assert engine.active_count == 2
    engine.run_until_idle()


def test_slots_that_do_not_fit_fail_the_start_with_one_line_naming_the_settings(make_engine, monkeypatch):
    """A GPU too small for max_active_streams x slot_max_length (mocked here: the CPU has no such limit)
    stops the engine's start with the sizes and the two settings to lower, not a CUDA traceback."""

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 224.00 MiB")

    monkeypatch.setattr(SlotKVCache, "for_talker", out_of_memory)
    with pytest.raises(ValueError) as refused:
        make_engine(Capability.CUSTOM_VOICE, max_active_streams=48, slot_max_length=1024)
    message = str(refused.value)
    assert message.startswith("out of GPU memory for 48 talker key/value slots of 1024 tokens")
    assert "lower QWEN3_TTS_MAX_ACTIVE_STREAMS or QWEN3_TTS_SLOT_MAX_LENGTH" in message
    assert "\n" not in message, message
