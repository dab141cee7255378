"""Voice-agent sessions: text streamed into a running generation, on the real model code."""

from __future__ import annotations

import time

import numpy as np
from graph_rehearsal import both_frame_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_tts_serving.engine.requests import Capability, EngineUnavailableError, SynthesisRequest
from qwen3_tts_serving.engine.streams import CollectingSink
from qwen3_tts_serving.engine.text_feed import IncrementalText

AUDIO_ATOL = 1e-4
TEXT = "Agents speak while they think, one word after another."


def _session_request(text: str = "") -> SynthesisRequest:
    return SynthesisRequest(
        capability=Capability.CUSTOM_VOICE,
        text=text,
        speaker="ryan",
        language="english",
        sampling={"do_sample": False},
        text_open=True,
    )


def _open(engine, key: int, text: str = "") -> CollectingSink:
    sink = CollectingSink()
    stream = engine.make_stream(engine.validate(_session_request(text)), sink)
    engine.open_sessions([(key, stream, False)])
    return sink


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


@both_frame_paths
def test_text_streamed_word_by_word_equals_the_whole_text(make_engine, load_tts):
    engine = make_engine(Capability.CUSTOM_VOICE)
    sink = _open(engine, 1)
    fragments = _words(TEXT)
    first_audio_before_last_fragment = False
    for fragment in fragments[:-1]:
        engine.append_text(1, fragment)
        for _ in range(3):  # the agent is slower than the engine: it pauses for text in between
            engine.step()
        first_audio_before_last_fragment |= bool(sink.chunks)
    engine.append_text(1, fragments[-1], close=True)
    engine.run_until_idle()
    assert sink.error is None and sink.chunks[-1].is_last
    assert first_audio_before_last_fragment, "first audio must come before the text is complete"
    wavs, _ = load_tts(Capability.CUSTOM_VOICE).generate_custom_voice(
        text=TEXT,
        speaker="ryan",
        language="english",
        non_streaming_mode=False,
        do_sample=False,
        subtalker_dosample=False,
    )
    np.testing.assert_allclose(sink.audio(), wavs[0], atol=AUDIO_ATOL)


def test_whole_text_in_one_fragment_gives_the_same_audio(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE)
    streamed = _open(engine, 1)
    for fragment in _words(TEXT):
        engine.append_text(1, fragment)
        engine.step()
    engine.append_text(1, "", close=True)
    at_once = _open(engine, 2, TEXT)
    engine.append_text(2, "", close=True)
    engine.run_until_idle()
    np.testing.assert_allclose(streamed.audio(), at_once.audio(), atol=AUDIO_ATOL)


def test_an_idle_session_ends_with_a_clear_reason_and_frees_its_slot(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, session_idle_timeout_s=0.3)
    sink = _open(engine, 7, "Hello there and")
    for _ in range(6):
        engine.step()
    assert engine.active_count == 0, "a session without text must leave the step batch"
    time.sleep(0.4)
    engine.step()
    assert sink.chunks[-1].is_last and sink.finish_reason == "idle_timeout"
    assert not engine.has_work()
    try:
        engine.append_text(7, "more")
    except ValueError as error:
        assert "no open session 7" in str(error)
    else:
        raise AssertionError("appending to an ended session must fail")


def test_a_session_whose_client_left_is_freed(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE)
    sink = _open(engine, 3, "Waiting for words")
    for _ in range(4):
        engine.step()
    sink.cancelled = True
    engine.step()
    assert sink.finish_reason == "cancelled"
    assert 3 not in engine._sessions


def test_session_starts_past_a_full_queue_are_refused_at_once(make_engine):
    """A session joins the admission queue when its first text comes; past ``max_queued_streams`` waiting it
    is refused with the retry hint at once, as a plain stream is (sessions queued without a bound, each
    waiting out ``max_queue_wait_s``), and forgotten: its ID may open again."""
    engine = make_engine(Capability.CUSTOM_VOICE, max_active_streams=1, max_queued_streams=2)
    sinks = [_open(engine, key, "Hello there, and more") for key in range(2)]
    engine.step()  # one takes the slot, one waits in the queue
    sinks += [_open(engine, key, "Hello there, and more") for key in range(2, 5)]
    engine.step()  # one more place in the queue: two find it full
    refused = [sink for sink in sinks if sink.error is not None]
    assert len(refused) == 2 and all(isinstance(sink.error, EngineUnavailableError) for sink in refused)
    assert all("queue is full (2 requests waiting); retry" in str(sink.error) for sink in refused)
    assert all(not sink.chunks for sink in refused)
    assert [key in engine._sessions for key in range(5)] == [True, True, True, False, False]
    assert engine.active_count == 1 and engine.scheduler.queued == 2


@both_frame_paths
def test_two_sessions_with_different_voices_stay_separate(make_engine):
    def solo(speaker: str) -> np.ndarray:
        engine = make_engine(Capability.CUSTOM_VOICE)
        sink = CollectingSink()
        request = _session_request("Two voices at once.")
        request.speaker = speaker
        engine.open_sessions([(1, engine.make_stream(engine.validate(request), sink), True)])
        engine.run_until_idle()
        return sink.audio()

    engine = make_engine(Capability.CUSTOM_VOICE)
    sinks = []
    for key, speaker in enumerate(("ryan", "vivian")):
        request = _session_request("Two voices")
        request.speaker = speaker
        sink = CollectingSink()
        engine.open_sessions([(key, engine.make_stream(engine.validate(request), sink), False)])
        sinks.append(sink)
    engine.step()
    for key in (0, 1):
        engine.append_text(key, " at once.", close=True)
    engine.run_until_idle()
    np.testing.assert_allclose(sinks[0].audio(), solo("ryan"), atol=AUDIO_ATOL)
    np.testing.assert_allclose(sinks[1].audio(), solo("vivian"), atol=AUDIO_ATOL)
    assert not np.allclose(sinks[0].audio()[:2000], sinks[1].audio()[:2000])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=st.sampled_from(list("ab cd,.!?12 \n你好。世界，")), min_size=1, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_committed_pieces_tokenize_like_the_whole_text(load_tts, text, cuts):
    processor = load_tts(Capability.CUSTOM_VOICE).processor

    def ids(piece: str) -> list[int]:
        return processor(text=piece, return_tensors="pt")["input_ids"][0].tolist() if piece else []

    feed = IncrementalText()
    pieces = []
    previous = 0
    for cut in [*sorted({c for c in cuts if c <= len(text)}), len(text)]:
        pieces.append(feed.feed(text[previous:cut], close=cut == len(text)))
        previous = cut
    assert "".join(pieces) == text
    assert [i for piece in pieces for i in ids(piece)] == ids(text)


@both_frame_paths
def test_a_paused_session_keeps_its_slot_so_the_batch_never_exceeds_the_limit(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, max_active_streams=1)
    session = _open(engine, 5, "Hello there and")
    for _ in range(6):
        engine.step()
    assert engine.active_count == 0 and engine.occupied_slots == 1  # paused, waiting for text
    plain = CollectingSink()
    request = SynthesisRequest(
        capability=Capability.CUSTOM_VOICE, text="Next in line.", speaker="ryan", language="english"
    )
    engine.submit([engine.make_stream(engine.validate(request), plain)])
    for _ in range(4):
        engine.step()
        assert engine.occupied_slots <= 1
    assert not plain.chunks, "the waiting request must not take the paused session's slot"
    engine.append_text(5, " goodbye.", close=True)
    while engine.has_work():
        engine.step()
        assert engine.occupied_slots <= 1
        if not session.chunks or not session.chunks[-1].is_last:
            assert not plain.chunks, "admitted before the session ended"
    assert session.chunks[-1].is_last and plain.chunks[-1].is_last
    assert session.error is None and plain.error is None
