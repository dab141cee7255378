"""Batched sampling: the same rules as transformers' logits processors, and batch-independent randomness."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from qwen3_tts_serving.engine.sampling import (
    SamplerRows,
    _mask_top_k,
    _mask_top_p,
    apply_repetition_penalty,
    sample,
    sample_tokens,
    uniform_noise,
)

VOCAB = 64


def _rows(batch: int, **overrides) -> SamplerRows:
    values = dict(
        do_sample=[True] * batch,
        temperature=[1.0] * batch,
        top_k=[0] * batch,
        top_p=[1.0] * batch,
        seed=list(range(batch)),
    )
    values.update(overrides)
    return SamplerRows.build(**values, device=torch.device("cpu"))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31), top_k=st.integers(1, VOCAB + 5))
def test_top_k_matches_transformers(seed, top_k):
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(seed))
    ours = _mask_top_k(logits, torch.full((3,), top_k))
    theirs = TopKLogitsWarper(top_k=top_k)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31), top_p=st.floats(0.05, 0.99))
def test_top_p_matches_transformers(seed, top_p):
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(seed))
    ours = _mask_top_p(logits, torch.full((3,), top_p))
    theirs = TopPLogitsWarper(top_p=top_p)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), penalty=st.floats(0.5, 2.0))
def test_repetition_penalty_matches_transformers(seed, penalty):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, VOCAB, generator=generator)
    history = torch.randint(0, VOCAB, (2, 10), generator=generator)
    seen = torch.zeros(2, VOCAB, dtype=torch.bool).scatter(1, history, True)
    ours = apply_repetition_penalty(logits, seen, torch.full((2,), penalty))
    theirs = RepetitionPenaltyLogitsProcessor(penalty=penalty)(history, logits.clone())
    torch.testing.assert_close(ours, theirs)


def test_a_row_samples_the_same_tokens_alone_and_in_a_batch():
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(1))
    step = torch.tensor([5, 9, 2, 7])
    together = sample(logits, _rows(4, seed=[11, 22, 33, 44]), step, group=3)
    for row in range(4):
        alone = sample(logits[row : row + 1], _rows(1, seed=[[11, 22, 33, 44][row]]), step[row : row + 1], 3)
        assert alone.item() == together[row].item()


def test_greedy_rows_take_the_argmax_next_to_sampling_rows():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(2))
    tokens = sample(logits, _rows(2, do_sample=[False, True]), torch.tensor([0, 0]), group=0)
    assert tokens[0].item() == logits[0].argmax().item()


def test_sampling_follows_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    rows = _rows(4000, seed=list(range(4000)))
    tokens = sample(logits, rows, torch.zeros(4000, dtype=torch.long), group=0)
    frequencies = torch.bincount(tokens, minlength=4).float() / 4000
    torch.testing.assert_close(frequencies, logits[0].softmax(-1), atol=0.03, rtol=0)


def test_noise_depends_on_every_key_and_stays_in_the_open_interval():
    base = uniform_noise(torch.tensor([1]), torch.tensor([1]), 1, VOCAB)
    assert 0 < base.min() and base.max() < 1
    for other in (
        uniform_noise(torch.tensor([2]), torch.tensor([1]), 1, VOCAB),
        uniform_noise(torch.tensor([1]), torch.tensor([2]), 1, VOCAB),
        uniform_noise(torch.tensor([1]), torch.tensor([1]), 2, VOCAB),
    ):
        assert not torch.equal(base, other)
    assert torch.equal(base, uniform_noise(torch.tensor([1]), torch.tensor([1]), 1, VOCAB))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 5),
    data=st.data(),
)
def test_sampling_among_top_k_candidates_equals_sampling_the_whole_vocabulary(seed, batch, data):
    # The fast path (`sample` when every sampling row has a top_k) against the graph-safe full one.
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, VOCAB, generator=generator) * 3
    do_sample = data.draw(st.lists(st.booleans(), min_size=batch, max_size=batch))
    rows = _rows(
        batch,
        do_sample=do_sample,
        temperature=data.draw(st.lists(st.floats(0.3, 2.0), min_size=batch, max_size=batch)),
        top_k=data.draw(st.lists(st.integers(1, VOCAB - 1), min_size=batch, max_size=batch)),
        top_p=data.draw(st.lists(st.sampled_from([1.0, 0.95, 0.8, 0.5]), min_size=batch, max_size=batch)),
        seed=data.draw(st.lists(st.integers(0, 2**62), min_size=batch, max_size=batch)),
    )
    step = torch.randint(0, 500, (batch,), generator=generator)
    assert rows.candidates is None or rows.candidates < VOCAB
    fast = sample(logits, rows, step, group=seed % 16)
    full = sample_tokens(logits, rows, step, group=seed % 16)
    assert torch.equal(fast, full)


def test_rows_know_on_the_host_whether_and_how_widely_they_sample():
    assert not _rows(2, do_sample=[False, False]).any_sample
    assert _rows(2, do_sample=[False, True], top_k=[0, 7]).candidates == 7  # greedy rows don't count
    assert _rows(2, top_k=[5, 0]).candidates is None  # one sampling row draws from everything
    assert _rows(2, top_k=[5, 9]).candidates == 9


def test_rows_know_when_the_candidate_masks_cannot_remove_anything():
    uniform = _rows(3, do_sample=[True, True, False], top_k=[50, 50, 0], top_p=[1.0, 1.0, 0.5])
    assert uniform.same_top_k and not uniform.any_top_p  # the greedy row's settings do not count
    mixed = _rows(2, top_k=[50, 20], top_p=[1.0, 0.9])
    assert not mixed.same_top_k and mixed.any_top_p
