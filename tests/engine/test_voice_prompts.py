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
        (_request(_clip(3.5), rate=4000), "ref_sample_rate must be between 8000 and 192000"),
        (_request(np.full(90000, np.nan, np.float32)), "finite"),
        (_request(np.zeros((2, 90000), np.float32)), "1-D"),
        (SynthesisRequest(capability=Capability.VOICE_CLONE, text=""), "ref_audio is required"),
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


def test_streams_keep_stepping_while_a_prompt_is_extracted(make_engine, base) -> None:
    """The engine model extracts prompts on a worker beside its running batch (one copy of the Base weights),
    paced by the engine's steps, so a long clip does not pause the streams for its whole extraction, as it
    does on the engine thread. ``python -m benchmarks.prompt_stall`` measures the pause, on a GPU too."""
    tts, spec = base
    engine = make_engine(Capability.VOICE_CLONE, frames_per_char=50)
    steps = StepTimes()
    worker = VoicePromptWorker(tts, LIMITS)
    engine.observer = Observers(steps, worker.pacer)  # wired as the engine model wires it
    text = "A long sentence to keep the batch busy. " * 6
    clones = [
        _request(
            _clip(3.0), x_vector_only=True, text=text, sampling={"do_sample": False, "max_new_tokens": 900}
        )
        for _ in range(2)
    ]
    sinks = [QuietSink() for _ in clones]
    engine.submit(
        [engine.make_stream(engine.validate(r), sink) for r, sink in zip(clones, sinks, strict=True)]
    )
    engine.start()
    try:
        deadline = time.monotonic() + 60
        while len(steps.times) < 20:
            assert time.monotonic() < deadline, "the engine did not start stepping"
            time.sleep(0.01)
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
