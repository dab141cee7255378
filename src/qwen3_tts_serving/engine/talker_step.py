"""One decode step of the talker for every row of the running batch, on ``KVBuffers``.

The talker's own modules and weights (norms, projections, multimodal rotary embedding, MLPs), our loop:
each layer writes its new key/value column in place and attends over the columns in use, with the batch's
padding mask. It replaces the model's ``forward`` with a dynamic cache for the per-frame step, which
copies every layer's whole history at every frame and rebuilds its masks; prefill still runs through
the model's ``forward``. Greedy output is tested equal to the package's.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from qwen_tts.core.models.modeling_qwen3_tts import apply_multimodal_rotary_pos_emb

from .attention import attend, project_qkv
from .batch_state import BatchState


class TalkerStep:
    def __init__(self, talker: Any) -> None:
        self._model = talker.model
        config = self._model.config
        if getattr(config, "sliding_window", None) is not None:
            raise ValueError("the talker step supports full attention only")
        self._layers = list(self._model.layers)
        scaling = config.rope_scaling
        self._rotate = functools.partial(
            apply_multimodal_rotary_pos_emb,
            mrope_section=scaling["mrope_section"],
            mrope_interleaved=scaling["interleaved"],
        )

    def __call__(self, inputs: torch.Tensor, state: BatchState) -> torch.Tensor:
        """``inputs`` [B, 1, D] at each row's next position; the batch's mask already has their column.
        Returns the final hidden states [B, 1, D]."""
        kv = state.kv
        column = kv.next_column()
        assert state.length == column + 1, "append the mask column before stepping"
        # The three rotary sections (time, height, width) share the text position of a speech frame.
        position_ids = state.positions.view(1, -1, 1).expand(3, -1, -1)
        cos, sin = self._model.rotary_emb(inputs, position_ids)
        visible = state.attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: padding columns hidden
        hidden = inputs
        for index, layer in enumerate(self._layers):
            attention = layer.self_attn
            query, key, value = project_qkv(attention, layer.input_layernorm(hidden), cos, sin, self._rotate)
            keys, values = kv.keys[index], kv.values[index]
            keys[:, :, column] = key[:, :, 0]
            values[:, :, column] = value[:, :, 0]
            end = column + 1
            attended = attend(attention, query, keys[:, :, :end], values[:, :, :end], attn_mask=visible)
            hidden = hidden + attended
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        kv.length = column + 1
        return self._model.norm(hidden)
