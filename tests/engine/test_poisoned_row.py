"""One request's bad numbers fail that request alone: its batch-mates go on and their audio is unchanged.

Sampling values are range-checked before a stream is made (``sampling_ranges``); a row whose numbers go
bad anyway (forced here with ``fault_injection``: non-finite logits from its third frame) is detected in
the frame's one host copy and leaves with a clear error before its codes can reach the decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_requests import custom_voice, run_to_end

from qwen3_tts_serving.engine.engine import FAULT_MARKER
from qwen3_tts_serving.engine.requests import (
    Capability,
    GenerationFaultError,
    InvalidRequestError,
    SynthesisRequest,
)
from qwen3_tts_serving.engine.streams import CollectingSink
from qwen3_tts_serving.sampling_ranges import SAMPLING_RANGES

GREEDY = {"do_sample": False}
# Alone and batched decode the same codes; batched float rounding differs slightly (README tolerance).
AUDIO_ATOL = 1e-4


def _request(text: str, **sampling: object) -> SynthesisRequest:
    return custom_voice(text, **{"max_new_tokens": 16, **sampling})


def _run(engine, requests: list[SynthesisRequest]) -> list[CollectingSink]:
    return run_to_end(engine, requests, errors=True)


def _assert_same_audio(sink: CollectingSink, reference: CollectingSink) -> None:
    assert sink.audio().shape == reference.audio().shape
    assert sink.audio().size > 0
    np.testing.assert_allclose(sink.audio(), reference.audio(), atol=AUDIO_ATOL)


@pytest.fixture
def engine(make_engine):
    return make_engine(Capability.CUSTOM_VOICE, fault_injection=True, frames_per_char=50)


def test_poisoned_row_fails_alone_and_batch_mates_are_unchanged(engine):
    healthy = ["Hello there, a healthy stream.", "Another healthy stream beside it."]
    alone = [_run(engine, [_request(text)])[0] for text in healthy]
    poisoned_text = f"{FAULT_MARKER} This one goes bad."

    first, poisoned, second = _run(
        engine, [_request(healthy[0]), _request(poisoned_text), _request(healthy[1])]
    )

    assert isinstance(poisoned.error, GenerationFaultError)
    assert "non-finite" in str(poisoned.error)
    assert not any(chunk.is_last for chunk in poisoned.chunks), "a failed stream gets its error, not an end"
    for sink, reference in zip((first, second), alone, strict=True):
        assert sink.error is None
        assert sink.finish_reason == reference.finish_reason
        _assert_same_audio(sink, reference)
    assert engine.active_count == 0
    # The engine keeps serving after the fault.
    (after,) = _run(engine, [_request(healthy[0])])
    _assert_same_audio(after, alone[0])


def test_poisoned_row_fails_even_when_sampling(engine):
    sampled = {"do_sample": True, "seed": 3}
    (reference,) = _run(engine, [_request("A sampled stream.", **sampled)])
    healthy, poisoned = _run(
        engine, [_request("A sampled stream.", **sampled), _request(f"{FAULT_MARKER} bad", **sampled)]
    )
    assert isinstance(poisoned.error, GenerationFaultError)
    assert healthy.error is None
    _assert_same_audio(healthy, reference)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("temperature", 1e39),
        ("temperature", float("inf")),
        ("temperature", float("nan")),
        ("temperature", 0.0),
        ("temperature", 1e-300),
        ("repetition_penalty", 1e39),
        ("repetition_penalty", 0.0),
        ("top_k", 10**9),
        ("top_k", -1),
        ("top_p", 1.5),
        ("max_new_tokens", 0),
        ("max_new_tokens", 10**7),
        ("seed", -1),
    ],
)
def test_out_of_range_sampling_values_are_refused_naming_the_range(engine, name, value):
    with pytest.raises(InvalidRequestError) as caught:
        engine.make_stream(engine.validate(_request("Hello.", **{name: value})), CollectingSink())
    message = str(caught.value)
    assert name in message
    assert SAMPLING_RANGES[name].describe() in message


@pytest.mark.parametrize("name", sorted(SAMPLING_RANGES))
def test_both_ends_of_each_range_are_accepted(engine, name):
    spec = SAMPLING_RANGES[name]
    for value in (spec.low, spec.high):
        value = int(value) if spec.integer else float(value)
        engine.make_stream(engine.validate(_request("Hello.", **{name: value})), CollectingSink())
