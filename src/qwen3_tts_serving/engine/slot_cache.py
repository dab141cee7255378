"""The talker's key/value storage: one preallocated slot per stream, so joins and leaves copy nothing else.

Every layer's keys and values live in ``[slots, kv_heads, max_length, head_dim]`` tensors allocated once.
A stream owns one slot while it runs (or waits for text): its prefill is written into columns
``[0, prompt_length)`` of its own slot, each frame appends one column at ``lengths[slot]``, and leaving
just hands the slot back. No other stream's cache is touched, where the running-batch layout re-assembled
every layer of the whole batch on each join and leave.

Slots are handed out lowest-free-first, so occupied slots cluster at the low end and a frame step can run
over slots ``[0, batch)`` with ``batch`` just above the highest occupied one; free slots inside that range
are computed and ignored (the step's ``active`` mask). Per-slot lengths and rotary positions live on the
device, next to the storage, so a step needs nothing from the host but which range to run.
"""

from __future__ import annotations

import heapq
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from .transfer import to_device


def kv_bytes(*, layers: int, kv_heads: int, max_length: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of one slot: keys and values (2) of every layer, ``[kv_heads, max_length, head_dim]`` each.
    The one formula for a slot's size: the cache reports it and ``capacity`` plans GPUs with it."""
    return 2 * layers * kv_heads * max_length * head_dim * dtype_bytes


class SlotKVCache:
    def __init__(
        self,
        *,
        layers: int,
        slots: int,
        kv_heads: int,
        max_length: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        if slots < 1 or max_length < 2:
            raise ValueError(f"a slot cache needs >= 1 slot and >= 2 columns, got {slots} and {max_length}")
        shape = (slots, kv_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)  # columns in use per slot
        self.positions = torch.zeros(
            slots, dtype=torch.long, device=device
        )  # rotary position of the next token
        self.max_length = max_length
        self.num_slots = slots
        self._free = list(range(slots))  # a heap: the lowest free slot first
        self._occupied: set[int] = set()

    @classmethod
    def for_talker(cls, talker: Any, *, slots: int, max_length: int) -> SlotKVCache:
        config = talker.model.config
        weight = talker.codec_head.weight
        return cls(
            layers=int(config.num_hidden_layers),
            slots=slots,
            kv_heads=int(config.num_key_value_heads),
            max_length=max_length,
            head_dim=int(talker.model.layers[0].self_attn.head_dim),
            dtype=weight.dtype,
            device=weight.device,
        )

    @staticmethod
    def bytes_per_token(talker: Any) -> int:
        """Key/value bytes one token of one stream takes over all layers."""
        config = talker.model.config
        return kv_bytes(
            layers=int(config.num_hidden_layers),
            kv_heads=int(config.num_key_value_heads),
            max_length=1,
            head_dim=int(talker.model.layers[0].self_attn.head_dim),
            dtype_bytes=talker.codec_head.weight.element_size(),
        )

    @property
    def bytes_per_slot(self) -> int:
        _, kv_heads, max_length, head_dim = self.keys[0].shape
        return kv_bytes(
            layers=len(self.keys),
            kv_heads=kv_heads,
            max_length=max_length,
            head_dim=head_dim,
            dtype_bytes=self.keys[0].element_size(),
        )

    # ------------------------------------------------------------------------------------ slot table
    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def occupied_end(self) -> int:
        """One past the highest occupied slot (0 when all are free)."""
        return max(self._occupied) + 1 if self._occupied else 0

    def allocate(self) -> int | None:
        """The lowest free slot, or None when all are taken."""
        if not self._free:
            return None
        slot = heapq.heappop(self._free)
        self._occupied.add(slot)
        return slot

    def release(self, slot: int, *, scrub: bool = False) -> None:
        """Hand a slot back. ``scrub`` zeroes its storage: a row whose numbers went bad must not leave
        non-finite keys behind (a masked-out NaN still poisons attention: 0 * NaN is NaN)."""
        if slot not in self._occupied:
            raise ValueError(f"slot {slot} is not in use")
        self._occupied.remove(slot)
        heapq.heappush(self._free, slot)
        self.lengths[slot].fill_(0)  # fill_ on a view: a kernel, never a copy from the host
        self.positions[slot].fill_(0)
        if scrub:
            for tensor in (*self.keys, *self.values):
                tensor[slot].zero_()

    def release_all(self) -> None:
        for slot in sorted(self._occupied):
            self.release(slot, scrub=True)

    # ------------------------------------------------------------------------------------- writing
    def write_prefill(self, slots: list[int], cache: DynamicCache, lengths: list[int]) -> None:
        """Copy a left-padded prefill's rows into their slots: row ``i``'s last ``lengths[i]`` columns go
        to columns ``[0, lengths[i])`` of ``slots[i]``. One gather and one indexed write per layer."""
        padded = cache.layers[0].keys.shape[2]
        if max(lengths) > self.max_length - 1:
            raise ValueError(f"a prompt of {max(lengths)} tokens does not fit slots of {self.max_length}")
        device = self.lengths.device
        target = to_device(slots, torch.long, device)
        shift = to_device([padded - n for n in lengths], torch.long, device)
        # Column j of the result is column (j + shift) of the row: the real tokens move to the front;
        # what wraps round behind them lies past the slot's length and is never attended to.
        columns = (torch.arange(padded, device=device).unsqueeze(0) + shift.unsqueeze(1)) % padded
        for layer, stored in zip(cache.layers, zip(self.keys, self.values, strict=True), strict=True):
            for source, storage in zip((layer.keys, layer.values), stored, strict=True):
                index = columns[:, None, :, None].expand(-1, source.shape[1], -1, source.shape[3])
                storage[target, :, :padded] = source.gather(2, index).to(storage.dtype)
        counts = to_device(lengths, torch.long, device)
        self.lengths[target] = counts
        self.positions[target] = counts
