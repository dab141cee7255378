"""The slot cache: lowest-free slots, prefill rows copied into their own slot only, scrubbed release."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from qwen3_tts_serving.engine.slot_cache import SlotKVCache


def _cache(slots: int = 6, max_length: int = 16, layers: int = 2) -> SlotKVCache:
    return SlotKVCache(
        layers=layers,
        slots=slots,
        kv_heads=2,
        max_length=max_length,
        head_dim=4,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def _prefill(rows: int, padded: int, layers: int = 2, seed: int = 0) -> DynamicCache:
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache()
    for layer in range(layers):
        keys, values = (torch.randn(rows, 2, padded, 4, generator=generator) for _ in range(2))
        cache.update(keys, values, layer)
    return cache


def test_slots_are_handed_out_lowest_free_first():
    cache = _cache(slots=4)
    assert [cache.allocate() for _ in range(3)] == [0, 1, 2]
    assert cache.occupied_end == 3 and cache.free_count == 1
    cache.release(1)
    assert cache.occupied_end == 3
    assert cache.allocate() == 1  # the hole is filled before the top grows
    assert cache.allocate() == 3
    assert cache.allocate() is None
    cache.release(2)
    cache.release(3)
    assert cache.occupied_end == 2
    with pytest.raises(ValueError, match="slot 3 is not in use"):
        cache.release(3)


def test_prefill_rows_land_left_aligned_in_their_own_slots_and_nothing_else_moves():
    cache = _cache()
    for slot in range(6):
        assert cache.allocate() == slot
    before = [k.clone() for k in cache.keys]
    lengths = [5, 2, 7]  # left-padded to 7 columns, as the package pads a prompt batch
    prefill = _prefill(rows=3, padded=7)
    cache.write_prefill([4, 0, 2], prefill, lengths)
    for layer, stored in enumerate(prefill.layers):
        for row, (slot, length) in enumerate(zip([4, 0, 2], lengths, strict=True)):
            assert torch.equal(cache.keys[layer][slot, :, :length], stored.keys[row, :, 7 - length :])
            assert torch.equal(cache.values[layer][slot, :, :length], stored.values[row, :, 7 - length :])
        for untouched in (1, 3, 5):
            assert torch.equal(cache.keys[layer][untouched], before[layer][untouched])
    assert cache.lengths.tolist() == [2, 0, 7, 0, 5, 0]
    assert cache.positions.tolist() == [2, 0, 7, 0, 5, 0]


def test_a_prompt_longer_than_a_slot_is_refused():
    cache = _cache(max_length=8)
    cache.allocate()
    with pytest.raises(ValueError, match="does not fit slots of 8"):
        cache.write_prefill([0], _prefill(rows=1, padded=8), [8])


def test_release_resets_the_length_and_scrub_clears_non_finite_storage():
    cache = _cache()
    slot = cache.allocate()
    assert slot == 0
    cache.write_prefill([slot], _prefill(rows=1, padded=4), [4])
    cache.keys[1][slot, :, 6] = float("nan")
    cache.release(slot, scrub=True)
    assert int(cache.lengths[slot]) == 0
    assert all(not k[slot].any() for k in cache.keys) and all(not v[slot].any() for v in cache.values)


def test_bytes_per_slot_counts_keys_and_values_of_every_layer():
    cache = _cache(layers=3, max_length=16)
    assert cache.bytes_per_slot == 2 * 3 * 2 * 16 * 4 * 4
