"""The talker's running batch: one KV cache for all active streams, rows aligned on the right.

Streams join by merging their freshly prefilled cache into the running one (the shorter side is padded
on the left and masked out) and leave by row selection, so every frame is one talker call for everyone.
Positions are kept per row because left padding differs from row to row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from .streams import Stream


def _cache_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_from_tensors(tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = DynamicCache()
    for index, (keys, values) in enumerate(tensors):
        cache.update(keys, values, index)
    return cache


def _pad_left(tensor: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [amount, 0]
    return F.pad(tensor, pad)


@dataclass
class BatchState:
    streams: list[Stream]
    cache: DynamicCache
    attention_mask: torch.Tensor  # long [B, T]
    positions: torch.Tensor  # long [B]: the position id of each row's next token
    past_hidden: torch.Tensor  # [B, 1, D]: the talker's last hidden state (code predictor input)
    next_cb0: torch.Tensor  # long [B]: codebook-0 token sampled, not yet expanded into a frame
    seen_cb0: torch.Tensor  # bool [B, V]: codebook-0 tokens generated so far (repetition penalty)

    @property
    def size(self) -> int:
        return len(self.streams)

    @property
    def length(self) -> int:
        return self.attention_mask.shape[1]

    def select(self, rows: list[int]) -> BatchState:
        index = torch.tensor(rows, dtype=torch.long, device=self.attention_mask.device)
        tensors = [
            (k.index_select(0, index), v.index_select(0, index)) for k, v in _cache_tensors(self.cache)
        ]
        selected = BatchState(
            streams=[self.streams[i] for i in rows],
            cache=_cache_from_tensors(tensors),
            attention_mask=self.attention_mask.index_select(0, index),
            positions=self.positions.index_select(0, index),
            past_hidden=self.past_hidden.index_select(0, index),
            next_cb0=self.next_cb0.index_select(0, index),
            seen_cb0=self.seen_cb0.index_select(0, index),
        )
        return selected.trimmed()

    def trimmed(self) -> BatchState:
        """Drop leading columns that are padding in every row (left behind by streams that left)."""
        real = self.attention_mask.any(dim=0).nonzero()
        if real.numel() == 0:
            return self
        first = int(real[0])
        if first == 0:
            return self
        tensors = [(k[:, :, first:], v[:, :, first:]) for k, v in _cache_tensors(self.cache)]
        self.cache = _cache_from_tensors(tensors)
        self.attention_mask = self.attention_mask[:, first:]
        return self

    def append_column(self) -> torch.Tensor:
        """The mask for a step that adds one token to every row."""
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        return self.attention_mask


def merge(first: BatchState | None, second: BatchState) -> BatchState:
    """One batch holding the rows of both, right-aligned to a common length."""
    if first is None or first.size == 0:
        return second
    length = max(first.length, second.length)
    pad_first, pad_second = length - first.length, length - second.length
    tensors = []
    for (k1, v1), (k2, v2) in zip(_cache_tensors(first.cache), _cache_tensors(second.cache), strict=True):
        keys = torch.cat([_pad_left(k1, pad_first, 2), _pad_left(k2, pad_second, 2)], dim=0)
        values = torch.cat([_pad_left(v1, pad_first, 2), _pad_left(v2, pad_second, 2)], dim=0)
        tensors.append((keys, values))
    return BatchState(
        streams=first.streams + second.streams,
        cache=_cache_from_tensors(tensors),
        attention_mask=torch.cat(
            [_pad_left(first.attention_mask, pad_first, 1), _pad_left(second.attention_mask, pad_second, 1)]
        ),
        positions=torch.cat([first.positions, second.positions]),
        past_hidden=torch.cat([first.past_hidden, second.past_hidden]),
        next_cb0=torch.cat([first.next_cb0, second.next_cb0]),
        seen_cb0=torch.cat([first.seen_cb0, second.seen_cb0]),
    )
