"""Voice prompts from reference clips (the ``voice_prompt`` model's logic), on the real package and the tiny
Base checkpoint: a batch agrees with clips taken one by one, both modes, and the clip checks of cloning; and
the worker's pacing by the engine's steps."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from benchmarks.prompt_stall import QuietSink, StepTimes, longest_pause
from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.loading import model_spec
from qwen3_tts_serving.engine.observer import Observers
from qwen3_tts_serving.engine.requests import (
    NUM_CODE_GROUPS,
    Capability,
    InvalidRequestError,
    SynthesisRequest,
)
from qwen3_tts_serving.engine.streams import CollectingSink
from qwen3_tts_serving.engine.voice_prompts import (
    StepPacer,
    VoicePrompt,
    VoicePromptWorker,
    extract_voice_prompts,
    validate_clip,
)

LIMITS = EngineConfig(checkpoint_dir=".").limits


def _clip(seconds: float, freq: float = 200.0, rate: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * np.sin(2 * np.pi * 1.3 * t)).astype(np.float32)


def _request(
    audio: np.ndarray, *, rate: int = 24000, ref_text: str | None = None, text: str = "", **extra
) -> SynthesisRequest:
    return SynthesisRequest(
        capability=Capability.VOICE_CLONE,
        text=text,
        ref_audio=audio,
        ref_sample_rate=rate,
        ref_text=ref_text,
        **extra,
    )


@pytest.fixture(scope="module")
def base(load_tts):
    tts = load_tts(Capability.VOICE_CLONE)
    return tts, model_spec(tts, Capability.VOICE_CLONE)


def test_a_batch_equals_each_clip_alone_in_both_modes(base) -> None:
    tts, spec = base
    requests = [
        validate_clip(_request(_clip(3.5), ref_text="What the clip says."), spec, LIMITS),
        validate_clip(_request(_clip(4.2, 330.0)), spec, LIMITS),  # no transcript: x-vector only
        validate_clip(_request(_clip(3.1, 150.0), ref_text="Said.", x_vector_only=True), spec, LIMITS),
    ]
    batch = extract_voice_prompts(tts, requests)
    alone = [extract_voice_prompts(tts, [r])[0] for r in requests]
    for together, single in zip(batch, alone, strict=True):
        assert together.speaker_embedding.dtype == np.float32
        assert together.speaker_embedding.shape == (spec.speaker_embedding_dim,)
        np.testing.assert_allclose(together.speaker_embedding, single.speaker_embedding, atol=1e-4)
        # Batched encoding pads clips to one length: float rounding flips a few near-tie codebook choices
        # of the random-weight codec (under 1% here), never the shape.
        assert together.ref_codes.shape == single.ref_codes.shape
        if single.ref_codes.size:
            assert (together.ref_codes == single.ref_codes).mean() > 0.97
    in_context, x_vector, forced = batch
    # 12.5 codec frames per second of the 3.5 s clip; x-vector-only prompts carry no codes.
    assert in_context.ref_codes.shape[1] == NUM_CODE_GROUPS and abs(in_context.ref_codes.shape[0] - 44) <= 1
    assert in_context.ref_codes.dtype == np.int64 and in_context.ref_codes.max() < 2048
    assert x_vector.ref_codes.shape == (0, NUM_CODE_GROUPS)
    assert forced.ref_codes.shape == (0, NUM_CODE_GROUPS)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_request(_clip(1.0)), "at least 3 s"),
        (_request(_clip(31.0)), "at most 30 s"),
        (_request(_clip(3.5), rate=4000), "ref_sample_rate must be an integer between 8000 and 192000"),
        (_request(np.full(90000, np.nan, np.float32)), "finite"),
        # The length is checked first: an over-long clip is refused without reading its samples.
        (_request(np.full(31 * 24000, np.nan, np.float32)), "at most 30 s"),
        (_request(np.zeros((2, 90000), np.float32)), "1-D"),
        (SynthesisRequest(capability=Capability.VOICE_CLONE, text=""), "ref_audio is required"),
        (_request(_clip(3.5), ref_text="x" * 2001), "ref_text has 2001 characters; the limit is 2000"),
    ],
)
def test_clips_are_checked_like_clone_references(base, request_, message) -> None:
    _, spec = base
    with pytest.raises(InvalidRequestError, match=message):
        validate_clip(request_, spec, LIMITS)


def _paced_python_work(pacer: StepPacer, progress: list[int], stop: threading.Event) -> None:
    """Pure-Python work (it holds the interpreter) under the pacer, counting its progress."""
    with pacer.paced():
        while not stop.is_set():
            progress[0] += 1
            len(progress)  # a builtin call: the pacer looks in at calls


def _stalls(progress: list[int], for_s: float = 0.15) -> bool:
    before = progress[0]
    time.sleep(for_s)
    return progress[0] == before


def test_the_pacer_holds_the_worker_to_a_slice_per_engine_step() -> None:
    pacer = StepPacer(0.5, max_wait_s=30)
    progress, stop = [0], threading.Event()
    worker = threading.Thread(target=_paced_python_work, args=(pacer, progress, stop), daemon=True)
    try:
        worker.start()
        assert not _stalls(progress), "an idle engine does not pace the worker"
        pacer.step_done(seconds=0.02)  # streams run: 10 ms slices from now on
        time.sleep(0.05)
        assert _stalls(progress), "the worker ran past its slice while the engine was busy"
        waits = pacer.waits
        for _ in range(3):  # each step lets it run one slice more, and no more
            pacer.step_done(seconds=0.02)
            time.sleep(0.05)
            assert _stalls(progress)
        assert pacer.waits == waits + 3
        pacer.idle()  # the batch emptied: the worker runs freely again
        assert not _stalls(progress)
    finally:
        stop.set()
        pacer.idle()
        worker.join(5)
    assert not worker.is_alive()


def test_a_pacer_with_no_share_never_waits() -> None:
    pacer = StepPacer(0.0, max_wait_s=30)
    progress, stop = [0], threading.Event()
    worker = threading.Thread(target=_paced_python_work, args=(pacer, progress, stop), daemon=True)
    worker.start()
    pacer.step_done(seconds=0.02)
    try:
        assert not _stalls(progress)
        assert pacer.waits == 0
    finally:
        stop.set()
        worker.join(5)


def test_streams_keep_stepping_while_a_prompt_is_extracted(make_engine, base, voice) -> None:
    """The engine model extracts prompts on a worker beside its running batch (one copy of the Base weights),
    paced by the engine's steps, so a long clip does not pause the streams for its whole extraction, as it
    does on the engine thread. ``python -m benchmarks.prompt_stall`` measures the pause, on a GPU too."""
    tts, spec = base
    worker = VoicePromptWorker(tts, LIMITS)
    engine, steps, sinks = _steady_engine(make_engine, voice, worker)
    engine.observer = Observers(steps, worker.pacer)  # wired as the engine model wires it
    try:
        clip = validate_clip(_request(_clip(30.0), ref_text="A reference."), spec, LIMITS)

        done = threading.Event()
        replies: list[object] = []
        started = time.perf_counter()
        worker.submit(clip, lambda prompt: (replies.append(prompt), done.set()))
        assert done.wait(60)
        beside = (started, time.perf_counter())
        assert isinstance(replies[0], VoicePrompt) and replies[0].ref_codes.shape[1] == NUM_CODE_GROUPS
        assert worker.pacer.waits > 0, "the worker was not paced by the running batch"

        inline_done = threading.Event()
        started = time.perf_counter()
        engine.run_in_engine(lambda: (extract_voice_prompts(tts, [clip]), inline_done.set()))
        assert inline_done.wait(60)
        inline = (started, time.perf_counter())
        time.sleep(0.05)  # the step after the inline extraction

        extraction_s = beside[1] - beside[0]
        pause_beside = longest_pause(steps.times, *beside)
        pause_inline = longest_pause(steps.times, inline[0], inline[1] + 0.05)
        assert sum(beside[0] <= t <= beside[1] for t in steps.times) >= 3, "no steps during the extraction"
        assert pause_beside < extraction_s / 3, (pause_beside, extraction_s)
        assert pause_inline > 2 * pause_beside, (pause_inline, pause_beside)  # the check can fail
        assert not any(sink.errors for sink in sinks)
    finally:
        engine.stop()
        worker.stop()


@pytest.fixture(scope="module")
def voice(base) -> VoicePrompt:
    tts, spec = base
    clip = validate_clip(_request(_clip(3.0), x_vector_only=True), spec, LIMITS)
    return extract_voice_prompts(tts, [clip])[0]


def _steady_engine(make_engine, voice: VoicePrompt, voice_encoder=None):
    """A Base engine on its thread with two clone streams speaking in an extracted voice (a steady batch to
    watch; their requests carry no clip, so the encoder only sees what a test submits)."""
    engine = make_engine(Capability.VOICE_CLONE, frames_per_char=50, repetition_window=0)
    steps = StepTimes()
    engine.observer = steps
    engine.voice_encoder = voice_encoder
    talkers = [
        SynthesisRequest(
            capability=Capability.VOICE_CLONE,
            text="A long sentence to keep the batch busy. " * 6,
            speaker_embedding=voice.speaker_embedding,
            x_vector_only=True,
            sampling={"do_sample": False, "max_new_tokens": 900},
        )
        for _ in range(2)
    ]
    sinks = [QuietSink() for _ in talkers]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(talkers, sinks, strict=True)])
    engine.start()
    deadline = time.monotonic() + 60
    while len(steps.times) < 20:
        assert time.monotonic() < deadline, "the engine did not start stepping"
        time.sleep(0.01)
    return engine, steps, sinks


def _clone_with_a_long_clip() -> SynthesisRequest:
    return _request(
        _clip(30.0, 180.0),
        ref_text="A reference transcript.",
        text="Cloned while others speak.",
        sampling={"do_sample": False, "max_new_tokens": 8},
    )


def test_a_clone_clip_is_encoded_beside_the_running_batch_with_its_audio(make_engine, base, voice) -> None:
    """A clone request's clip goes to the voice-prompt worker, not to admission on the engine thread: the
    running streams keep stepping while it is encoded, and the clone speaks exactly as when admission
    encodes it (the engine without a worker)."""
    tts, _ = base
    runs: dict[str, tuple[np.ndarray, int]] = {}
    for how in ("worker", "admission"):
        worker = VoicePromptWorker(tts, LIMITS) if how == "worker" else None
        engine, steps, sinks = _steady_engine(make_engine, voice, worker)
        try:
            clone = CollectingSink()
            submitted = time.perf_counter()
            engine.submit([engine.make_stream(engine.validate(_clone_with_a_long_clip()), clone)])
            assert clone.done.wait(120)
            assert clone.error is None, clone.error
            # The sink notes monotonic times, the step observer perf_counter times: carry the first over.
            first_audio = time.perf_counter() - (time.monotonic() - clone.chunk_times[0])
            stepped = sum(submitted <= t <= first_audio for t in steps.times)
            runs[how] = (clone.audio(), stepped)
            assert not any(sink.errors for sink in sinks)
        finally:
            engine.stop()
            if worker is not None:
                worker.stop()
    (audio, stepped), (inline_audio, inline_stepped) = runs["worker"], runs["admission"]
    np.testing.assert_allclose(audio, inline_audio, atol=1e-4)
    # Encoding a 30 s clip takes hundreds of 4 ms steps' time: with the worker the batch steps on meanwhile;
    # at admission it waits (a couple of steps: the clone's prefill and first frame).
    assert stepped >= 10 and inline_stepped < stepped / 3, (stepped, inline_stepped)


class _HeldEncoder:
    """A voice encoder that answers when the test says so (the real worker answers too fast to catch)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[SynthesisRequest, object]] = []

    def submit(self, request, reply) -> None:
        self.waiting.append((request, reply))


def test_a_clip_the_encoder_refuses_fails_only_its_stream(make_engine, voice) -> None:
    encoder = _HeldEncoder()
    engine, steps, sinks = _steady_engine(make_engine, voice, encoder)
    try:
        clone = CollectingSink()
        engine.submit([engine.make_stream(engine.validate(_clone_with_a_long_clip()), clone)])
        assert len(encoder.waiting) == 1
        before = len(steps.times)
        time.sleep(0.1)
        assert not clone.done.is_set() and len(steps.times) > before  # it waits; the batch goes on
        assert engine.load == 3
        encoder.waiting[-1][1](ValueError("the clip is silent"))
        assert clone.done.wait(30)
        assert isinstance(clone.error, ValueError) and "silent" in str(clone.error)
        time.sleep(0.05)
        assert not any(sink.errors for sink in sinks)
    finally:
        engine.stop()


def test_a_clone_cancelled_while_its_clip_is_encoded_ends_without_a_prefill(make_engine) -> None:
    encoder = _HeldEncoder()
    engine = make_engine(Capability.VOICE_CLONE)
    engine.voice_encoder = encoder
    clone = CollectingSink()
    engine.submit([engine.make_stream(engine.validate(_clone_with_a_long_clip()), clone)])
    assert len(encoder.waiting) == 1 and not engine.has_work()  # nothing to do until the clip is encoded
    clone.cancelled = True
    engine.scheduler.admit(1, 0, engine._left_the_queue)
    assert clone.finish_reason == "cancelled" and engine.scheduler.queued == 0
    assert engine.stats.prefill_calls == 0


def _counting_extractions(monkeypatch) -> list[int]:
    """Each batch the worker extracts, by its size (the real extraction runs)."""
    from qwen3_tts_serving.engine import voice_prompts

    sizes: list[int] = []
    extract = voice_prompts.extract_voice_prompts

    def counting(tts, requests):
        sizes.append(len(requests))
        return extract(tts, requests)

    monkeypatch.setattr(voice_prompts, "extract_voice_prompts", counting)
    return sizes


def _prompts_of(worker: VoicePromptWorker, clips: list[SynthesisRequest]) -> list[object]:
    replies: list[object] = [None] * len(clips)
    done = [threading.Event() for _ in clips]
    for index, clip in enumerate(clips):
        worker.submit(clip, lambda prompt, i=index: (replies.__setitem__(i, prompt), done[i].set()))
    assert all(event.wait(60) for event in done)
    return replies


def test_a_clip_sent_again_is_answered_from_the_cache(base, monkeypatch) -> None:
    tts, spec = base
    sizes = _counting_extractions(monkeypatch)
    worker = VoicePromptWorker(tts, LIMITS, cache_size=2)
    clips = [
        validate_clip(_request(_clip(3.5, freq), ref_text="Said."), spec, LIMITS) for freq in (200.0, 300.0)
    ]
    try:
        # Three requests for one clip at once (segments of a long clone): extracted once, one prompt.
        first, again, third = _prompts_of(worker, [clips[0]] * 3)
        assert sizes == [1] and first is again is third and isinstance(first, VoicePrompt)
        assert _prompts_of(worker, [clips[0]])[0] is first and sizes == [1]  # later: from the cache
        # Another clip, or the same samples at another rate or without codes, is another prompt.
        other_rate = validate_clip(_request(clips[0].ref_audio, rate=16000, ref_text="Said."), spec, LIMITS)
        x_vector = validate_clip(_request(clips[0].ref_audio, x_vector_only=True), spec, LIMITS)
        for clip in (clips[1], other_rate, x_vector):
            assert _prompts_of(worker, [clip])[0] is not first
        assert len(sizes) == 4
        assert _prompts_of(worker, [clips[0]])[0] is not first  # the oldest left the 2-prompt cache
    finally:
        worker.stop()


def test_without_a_cache_every_clip_is_extracted(base, monkeypatch) -> None:
    tts, spec = base
    sizes = _counting_extractions(monkeypatch)
    worker = VoicePromptWorker(tts, LIMITS, cache_size=0)
    clip = validate_clip(_request(_clip(3.5), ref_text="Said."), spec, LIMITS)
    try:
        _prompts_of(worker, [clip])
        _prompts_of(worker, [clip])
        assert sum(sizes) == 2
    finally:
        worker.stop()
