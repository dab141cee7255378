"""The talker's running batch: one key/value store for all active streams, rows aligned on the right.

Streams join by merging their freshly prefilled cache into the running one (the shorter side is padded
on the left and masked out) and leave by row selection, so every frame is one talker step for everyone.
Positions are kept per row because left padding differs from row to row.

Keys and values live in buffers with spare columns (``KVBuffers``): a step writes its column in place,
where a growing cache copies every layer's whole history at every frame; full buffers grow by half, so a
stream of T frames costs O(T) copying in all rather than O(T^2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from .streams import Stream

_MIN_SPARE_COLUMNS = 64


def _capacity_for(length: int) -> int:
    return length + max(_MIN_SPARE_COLUMNS, length // 2)


def _assemble(pieces: list[torch.Tensor], length: int) -> torch.Tensor:
    """The rows of ``pieces`` ([b, heads, l, dim], l <= length) stacked and right-aligned in ``length`` used
    columns of a new buffer with spare columns after them; unused columns are zero (and masked)."""
    first = pieces[0]
    rows = sum(piece.shape[0] for piece in pieces)
    out = first.new_zeros(rows, first.shape[1], _capacity_for(length), first.shape[3])
    row = 0
    for piece in pieces:
        out[row : row + piece.shape[0], :, length - piece.shape[2] : length] = piece
        row += piece.shape[0]
    return out


@dataclass
class KVBuffers:
    """Per layer keys and values [B, kv_heads, capacity, head_dim]; columns ``[:length]`` are in use."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int

    @classmethod
    def from_cache(cls, cache: DynamicCache) -> KVBuffers:
        """A prefill's cache, copied into buffers with room to grow."""
        length = cache.layers[0].keys.shape[2]
        return cls(
            keys=[_assemble([layer.keys], length) for layer in cache.layers],
            values=[_assemble([layer.values], length) for layer in cache.layers],
            length=length,
        )

    def used(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        end = self.length
        return [(k[:, :, :end], v[:, :, :end]) for k, v in zip(self.keys, self.values, strict=True)]

    def next_column(self) -> int:
        """Where the next step writes; the buffers grow first when they are full."""
        if self.length == self.keys[0].shape[2]:
            grown = self._rebuilt(lambda used: used, self.length)
            self.keys, self.values = grown.keys, grown.values
        return self.length

    def select(self, index: torch.Tensor) -> KVBuffers:
        return self._rebuilt(lambda used: used.index_select(0, index), self.length)

    def without_leading(self, columns: int) -> KVBuffers:
        return self._rebuilt(lambda used: used[:, :, columns:], self.length - columns)

    def _rebuilt(self, piece: Callable[[torch.Tensor], torch.Tensor], length: int) -> KVBuffers:
        """New buffers holding ``piece`` of every layer's used keys and values."""
        end = self.length
        return KVBuffers(
            keys=[_assemble([piece(k[:, :, :end])], length) for k in self.keys],
            values=[_assemble([piece(v[:, :, :end])], length) for v in self.values],
            length=length,
        )

    @staticmethod
    def merged(first: KVBuffers, second: KVBuffers) -> KVBuffers:
        length = max(first.length, second.length)
        pairs = list(zip(first.used(), second.used(), strict=True))
        return KVBuffers(
            keys=[_assemble([a[0], b[0]], length) for a, b in pairs],
            values=[_assemble([a[1], b[1]], length) for a, b in pairs],
            length=length,
        )


@dataclass
class BatchState:
    streams: list[Stream]
    kv: KVBuffers
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
        selected = BatchState(
            streams=[self.streams[i] for i in rows],
            kv=self.kv.select(index),
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
        self.kv = self.kv.without_leading(first)
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
    masks = [
        torch.nn.functional.pad(state.attention_mask, (length - state.length, 0)) for state in (first, second)
    ]
    return BatchState(
        streams=first.streams + second.streams,
        kv=KVBuffers.merged(first.kv, second.kv),
        attention_mask=torch.cat(masks),
        positions=torch.cat([first.positions, second.positions]),
        past_hidden=torch.cat([first.past_hidden, second.past_hidden]),
        next_cb0=torch.cat([first.next_cb0, second.next_cb0]),
        seen_cb0=torch.cat([first.seen_cb0, second.seen_cb0]),
    )
