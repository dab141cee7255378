"""The device step on the tiny checkpoint's real talker: a slot's frames do not depend on which slot it
has, on what else is in the batch range (free or paused slots), or on the key-length bucket; a paused
slot is left exactly as it was; the step runs over static shapes chosen by buckets."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers.cache_utils import DynamicCache

from qwen3_tts_serving.engine.frame_step import BAD, NEXT_CB0, FrameStep, JoinRow, bucket_for
from qwen3_tts_serving.engine.requests import Capability, SamplingParams
from qwen3_tts_serving.engine.slot_cache import SlotKVCache

FRAMES = 6
PROMPT = 9


@pytest.fixture(scope="module")
def talker(load_tts):
    return load_tts(Capability.CUSTOM_VOICE).model.talker


def _step(talker, *, slots: int = 6, length_buckets: list[int] | None = None) -> FrameStep:
    cache = SlotKVCache.for_talker(talker, slots=slots, max_length=64)
    return FrameStep(
        talker,
        cache,
        eos=int(talker.config.codec_eos_token_id),
        batch_buckets=[1, 2, 4],
        length_buckets=length_buckets or [16, 32],
    )


def _stream_inputs(talker, seed: int) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """A stand-in prefill for one stream: its keys/values, last hidden state and text inputs."""
    generator = torch.Generator().manual_seed(seed)
    config = talker.model.config
    head_dim = talker.model.layers[0].self_attn.head_dim
    cache = DynamicCache()
    for layer in range(config.num_hidden_layers):
        keys, values = (
            torch.randn(1, config.num_key_value_heads, PROMPT, head_dim, generator=generator)
            for _ in range(2)
        )
        cache.update(keys, values, layer)
    hidden = torch.randn(1, 1, config.hidden_size, generator=generator)
    texts = torch.randn(FRAMES, config.hidden_size, generator=generator) * 0.1
    return cache, hidden, texts


def _join(step: FrameStep, slot: int, inputs, sampling: SamplingParams, seed: int) -> None:
    cache, hidden, _ = inputs
    assert step.cache.allocate() == slot  # lowest free first
    step.cache.write_prefill([slot], cache, [PROMPT])
    step.join([JoinRow(slot=slot, sampling=sampling, seed=seed, text_open=False)], hidden)


def _run(step: FrameStep, streams: dict[int, tuple], rows: int) -> dict[int, list[list[int]]]:
    """``FRAMES`` frames; each slot's report rows."""
    reports: dict[int, list[list[int]]] = {slot: [] for slot in streams}
    with torch.inference_mode():
        for frame in range(FRAMES):
            texts = [torch.zeros_like(streams[next(iter(streams))][2][0])] * rows
            for slot, inputs in streams.items():
                texts[slot] = inputs[2][frame]
            step.set_text_inputs(texts)
            longest = int(step.cache.lengths[:rows].max())
            report = step.collect(step.launch(rows, longest))
            for slot in streams:
                reports[slot].append(report[slot])
    return reports


@pytest.mark.parametrize("do_sample", [False, True])
def test_a_slot_steps_the_same_alone_and_beside_free_and_paused_slots(talker, do_sample):
    sampling = replace(SamplingParams(), do_sample=do_sample, subtalker_do_sample=do_sample)
    first, second, paused = (_stream_inputs(talker, seed) for seed in (1, 2, 3))

    alone = {}
    for inputs, seed in ((first, 11), (second, 12)):
        step = _step(talker)
        with torch.inference_mode():
            _join(step, 0, inputs, sampling, seed)
        alone[seed] = _run(step, {0: inputs}, rows=1)[0]

    step = _step(talker)
    with torch.inference_mode():
        _join(step, 0, first, sampling, 11)
        assert step.cache.allocate() == 1
        _join(step, 2, paused, sampling, 13)
        _join(step, 3, second, sampling, 12)
        step.release(1)  # a stream left: its slot is free, computed and ignored
        step.set_active(2, False)  # a session waiting for text keeps its slot
    state = step.state
    names = ("past_hidden", "next_cb0", "seen", "drawn", "frame_index")
    kept = {name: getattr(state, name)[2].clone() for name in names}
    kept_keys = [keys[2, :, :PROMPT].clone() for keys in step.cache.keys]
    together = _run(step, {0: first, 3: second}, rows=4)  # bucket 4: one padding row past slot 3

    assert together[0] == alone[11]
    assert together[3] == alone[12]
    assert all(row[BAD] == 0 for row in together[0])
    for name, value in kept.items():
        assert torch.equal(getattr(state, name)[2], value), f"a paused slot's {name} changed"
    assert int(step.cache.lengths[2]) == PROMPT
    for keys, before in zip(step.cache.keys, kept_keys, strict=True):
        assert torch.equal(keys[2, :, :PROMPT], before)
    assert step.cache.lengths.tolist()[:4] == [PROMPT + FRAMES, 0, PROMPT, PROMPT + FRAMES]


def test_the_key_length_bucket_does_not_change_the_frames(talker):
    inputs = _stream_inputs(talker, 5)
    reports = []
    for buckets in ([16, 32], [64]):
        step = _step(talker, length_buckets=buckets)
        with torch.inference_mode():
            _join(step, 0, inputs, SamplingParams(), 7)
        reports.append(_run(step, {0: inputs}, rows=1)[0])
    assert reports[0] == reports[1]
    assert all(0 <= row[NEXT_CB0] < talker.config.vocab_size for row in reports[0])


def test_a_bad_first_token_is_reported_with_the_next_frame(talker):
    cache, hidden, texts = _stream_inputs(talker, 4)
    step = _step(talker)
    with torch.inference_mode():
        _join(step, 0, (cache, hidden * float("nan"), texts), SamplingParams(), 1)
    report = _run(step, {0: (cache, hidden, texts)}, rows=1)[0]
    assert report[0][BAD] == 1


def test_buckets():
    assert bucket_for([1, 2, 4], 3) == 4
    assert bucket_for([16, 32], 16) == 16
    with pytest.raises(ValueError, match="past the largest bucket 32"):
        bucket_for([16, 32], 33)
