"""Key/value buffers of the running batch: growth, selection, merging and trimming keep every row's data."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from qwen3_tts_serving.engine.batch_state import KVBuffers


def _cache(rows: int, length: int, seed: int, layers: int = 2) -> DynamicCache:
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache()
    for layer in range(layers):
        keys, values = (torch.randn(rows, 2, length, 4, generator=generator) for _ in range(2))
        cache.update(keys, values, layer)
    return cache


def _used(buffers: KVBuffers) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k.clone(), v.clone()) for k, v in buffers.used()]


def test_buffers_grow_in_place_of_copying_every_step_and_keep_what_they_held():
    cache = _cache(rows=3, length=5, seed=1)
    buffers = KVBuffers.from_cache(cache)
    assert buffers.length == 5 and buffers.keys[0].shape[2] > 5  # room to grow
    for layer, (keys, values) in enumerate(buffers.used()):
        assert torch.equal(keys, cache.layers[layer].keys) and torch.equal(values, cache.layers[layer].values)
    written = []
    for _ in range(200):  # far past the first capacity
        column = buffers.next_column()
        column_data = torch.full((3, 2, 4), float(column))
        for keys in buffers.keys:
            keys[:, :, column] = column_data
        buffers.length = column + 1
        written.append(column)
    assert written == list(range(5, 205))
    keys = buffers.used()[1][0]
    assert torch.equal(keys[:, :, :5], cache.layers[1].keys)
    assert all(bool((keys[:, :, c] == c).all()) for c in range(5, 205))


def test_select_merge_and_trim_move_rows_with_their_columns():
    first = KVBuffers.from_cache(_cache(rows=2, length=6, seed=2))
    second = KVBuffers.from_cache(_cache(rows=1, length=3, seed=3))
    before_first, before_second = _used(first), _used(second)
    merged = KVBuffers.merged(first, second)
    assert merged.length == 6
    keys = merged.used()[0][0]
    assert torch.equal(keys[:2], before_first[0][0])
    assert torch.equal(keys[2:, :, 3:], before_second[0][0])  # right-aligned
    assert not keys[2:, :, :3].any()  # left padding (masked by the batch's attention mask)
    only_second = merged.select(torch.tensor([2]))
    trimmed = only_second.without_leading(3)
    assert trimmed.length == 3
    for (k, v), (k0, v0) in zip(trimmed.used(), before_second, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)
