"""Newcomers' prompts and prefill: the package builds the prompts, the talker's own forward runs them.

``prepare`` builds the prompts of a group of admitted streams with one package call (host work) and
keeps each stream's real prompt rows; ``run`` prefills a batch of prepared streams (left-padded as the
package pads them) and writes each row's keys and values into its own slot of the slot cache, so the
batch it joins is not touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from .attention import attention_backends
from .prompts import PromptBuilder
from .requests import Capability
from .slot_cache import SlotKVCache
from .streams import Stream, TextTrack
from .transfer import to_device, to_host


class Prefill:
    def __init__(self, tts: Any, capability: Capability, prompts: PromptBuilder) -> None:
        self._talker = tts.model.talker
        self._capability = capability
        self._prompts = prompts
        self.tts_pad: torch.Tensor | None = None  # [D]: the text input once a track is used up
        self.tts_eos: torch.Tensor | None = None  # [D]: the end-of-text marker closing a track
        # What the last ``prepare`` made that later work reads (see transfer.hand_over).
        self.handed_out: list[torch.Tensor] = []

    def _mask(self, padding: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """The prefill's attention mask for rows left-padded by ``padding`` [n]. For flash attention the
        2D padding mask it takes. Otherwise the 4D mask [n, 1, L, L] the model would build from it, built
        here from the padding counts: the model's own mask code inspects the mask's values (a host sync,
        which on a GPU would wait for the frame in flight). A padding position attends to itself only:
        a row with nothing to attend to comes out NaN on some backends, and NaN keys and values of the
        next layer would leak into real rows through the zero weights that mask them."""
        real = columns >= padding.unsqueeze(1)  # [n, L]
        if self._talker.model.config._attn_implementation == "flash_attention_2":
            return real.long()
        queries = columns.unsqueeze(2)  # [1, L, 1]
        causal = columns.unsqueeze(1) <= queries  # [1, L, L]: key <= query
        own = columns.unsqueeze(1) == queries
        return ((causal & real.unsqueeze(1)) | own).unsqueeze(1)

    def prepare(self, streams: list[Stream], input_open: Callable[[Stream], bool]) -> None:
        """Build the prompts of streams sharing one text mode (one package call; raises what the package
        raises). Each stream keeps its prompt rows, its text track and, for in-context clones, its
        reference codes (decoder context); ``handed_out`` lists the tensors behind them.

        Its host syncs (the prompts' lengths, the text rows' padding) wait for the work of the stream it
        runs on: the engine runs it on a stream of its own on a GPU, so that they do not wait for the frame
        in flight."""
        requests = [s.request for s in streams]
        items = (
            self._prompts.clone_prompt_items(requests) if self._capability is Capability.VOICE_CLONE else None
        )
        prompt = self._prompts.build(requests, items)
        self.tts_pad = prompt.tts_pad_embed.reshape(-1)
        self.tts_eos = prompt.tts_eos_embed.reshape(-1)
        lengths = to_host(prompt.attention_mask.sum(-1)).tolist()
        self.handed_out = [
            prompt.inputs_embeds,
            *prompt.trailing_text,
            prompt.tts_pad_embed,
            prompt.tts_eos_embed,
        ]
        padded = prompt.inputs_embeds.shape[1]
        for index, stream in enumerate(streams):
            stream.prompt_embeds = prompt.inputs_embeds[index, padded - int(lengths[index]) :]
            trailing = prompt.trailing_text[index]
            still_open = input_open(stream)
            if still_open and trailing.shape[0]:
                trailing = trailing[:-1]  # the package closed the text with tts_eos; ours is still open
            stream.text_track = TextTrack(trailing, closed=not still_open)
            if items is not None and items[index].icl_mode:
                stream.context_codes = items[index].ref_code
                self.handed_out.append(stream.context_codes)

    @torch.inference_mode()
    def run(self, streams: list[Stream], slots: list[int], cache: SlotKVCache) -> torch.Tensor:
        """Prefill prepared streams into ``slots``; returns the last hidden state of each [n, 1, D]."""
        rows = [s.prompt_embeds for s in streams]
        assert all(row is not None for row in rows), "prefill of a stream whose prompt was not built"
        lengths = [int(row.shape[0]) for row in rows]  # type: ignore[union-attr]
        longest = max(lengths)
        embeds = torch.stack([F.pad(row, (0, 0, longest - row.shape[0], 0)) for row in rows])  # type: ignore[union-attr]
        padding = to_device([longest - n for n in lengths], torch.long, embeds.device)
        columns = torch.arange(longest, device=embeds.device).unsqueeze(0)
        positions = (columns - padding.unsqueeze(1)).clamp(min=0)
        mask = self._mask(padding, columns)
        prefill_cache = DynamicCache()
        # Never cuDNN's attention, which plans anew for every prompt length (~2 ms of host time a layer).
        with attention_backends(embeds.device):
            out = self._talker.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions.unsqueeze(0).expand(3, -1, -1),
                past_key_values=prefill_cache,
                use_cache=True,
            )
        cache.write_prefill(slots, prefill_cache, lengths)
        for stream, length in zip(streams, lengths, strict=True):
            stream.prompt_embeds = None  # in the cache now
            stream.prompt_length = stream.cache_length = length
        return out.last_hidden_state[:, -1:]
