"""Codebooks 1-15 of a frame: the code predictor's 15 small autoregressive steps for every active row.

Two ways to run the same computation, chosen by ``EngineConfig.code_predictor``:

- ``reference``: the predictor's own ``forward`` per step with a fresh ``DynamicCache``, as the package
  runs it (kept as the ground truth the other is tested against);
- ``static`` (also ``auto`` and ``cuda_graphs``): our own loop over the predictor's layers (its modules,
  its weights) with the K/V buffers allocated once per call and every shape fixed by the batch size. No
  cache objects, no mask building, no host syncs: it runs inside the engine's frame step, and so inside
  the frame step's CUDA graphs on a GPU (``frame_step.py``).

Both sample with the same per-row parameters and counter-based noise, so they agree token for token
(greedy and seeded output is tested equal).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from qwen_tts.core.models.modeling_qwen3_tts import apply_rotary_pos_emb
from transformers.cache_utils import DynamicCache

from .attention import attend, project_qkv
from .config import CODE_PREDICTOR_MODES
from .requests import NUM_CODE_GROUPS
from .sampling import SamplerRows, sample, sample_tokens

# Positions in one frame's predictor sequence: the talker's hidden state, codebook 0, codebooks 1-14.
_SEQUENCE_LENGTH = NUM_CODE_GROUPS


class CodePredictor(Protocol):
    def predict(
        self, past_hidden: torch.Tensor, cb0: torch.Tensor, rows: SamplerRows, frame_index: torch.Tensor
    ) -> torch.Tensor:
        """``past_hidden`` [B, 1, D] and ``cb0`` [B] in, the whole frame [B, 16] out."""
        ...


class ReferenceCodePredictor:
    """The predictor's HF ``forward`` once per codebook, with a fresh dynamic cache per frame."""

    def __init__(self, talker: Any) -> None:
        self._talker = talker

    def predict(
        self, past_hidden: torch.Tensor, cb0: torch.Tensor, rows: SamplerRows, frame_index: torch.Tensor
    ) -> torch.Tensor:
        predictor = self._talker.code_predictor
        embeddings = predictor.model.get_input_embeddings()
        inputs = torch.cat([past_hidden, self._talker.get_input_embeddings()(cb0.unsqueeze(1))], dim=1)
        cache = DynamicCache()
        codes = [cb0]
        for group in range(1, NUM_CODE_GROUPS):
            out = predictor.model(
                inputs_embeds=predictor.small_to_mtp_projection(inputs), past_key_values=cache, use_cache=True
            )
            logits = predictor.lm_head[group - 1](out.last_hidden_state[:, -1])
            token = sample(logits, rows, frame_index, group)
            codes.append(token)
            inputs = embeddings[group - 1](token.unsqueeze(1))
        return torch.stack(codes, dim=1)


class StaticCodePredictor:
    """Our own pass over the predictor's decoder layers with fixed shapes (capturable in a CUDA graph)."""

    def __init__(self, talker: Any, *, sync_free: bool = False) -> None:
        self._talker = talker
        self._predictor = talker.code_predictor
        model = self._predictor.model
        config = model.config
        unsupported = [t for t in config.layer_types if t != "full_attention"]
        if unsupported:
            raise ValueError(f"static code predictor supports full attention only, not {unsupported[0]}")
        self._layers = list(model.layers[: config.num_hidden_layers])
        self._kv_heads = int(config.num_key_value_heads)
        self._head_dim = int(self._layers[0].self_attn.head_dim)
        # Sampling without host syncs is what a CUDA graph needs; eager runs may skip work for greedy rows.
        self._sample = sample_tokens if sync_free else sample
        weight = model.norm.weight
        positions = torch.arange(_SEQUENCE_LENGTH, device=weight.device).unsqueeze(0)
        probe = torch.zeros(1, _SEQUENCE_LENGTH, 1, device=weight.device, dtype=weight.dtype)
        self._cos, self._sin = model.rotary_emb(probe, positions)  # [1, 16, head_dim], the model's dtype

    def predict(
        self, past_hidden: torch.Tensor, cb0: torch.Tensor, rows: SamplerRows, frame_index: torch.Tensor
    ) -> torch.Tensor:
        batch = past_hidden.shape[0]
        cache_shape = (batch, self._kv_heads, _SEQUENCE_LENGTH, self._head_dim)
        dtype = self._cos.dtype
        caches = [
            (past_hidden.new_empty(cache_shape, dtype=dtype), past_hidden.new_empty(cache_shape, dtype=dtype))
            for _ in self._layers
        ]
        embeddings = self._predictor.model.get_input_embeddings()
        inputs = torch.cat([past_hidden, self._talker.get_input_embeddings()(cb0.unsqueeze(1))], dim=1)
        codes = [cb0]
        start = 0
        for group in range(1, NUM_CODE_GROUPS):
            hidden = self._forward(self._predictor.small_to_mtp_projection(inputs), caches, start)
            start += inputs.shape[1]
            logits = self._predictor.lm_head[group - 1](hidden[:, -1])
            token = self._sample(logits, rows, frame_index, group)
            codes.append(token)
            inputs = embeddings[group - 1](token.unsqueeze(1))
        return torch.stack(codes, dim=1)

    def _forward(
        self, hidden: torch.Tensor, caches: list[tuple[torch.Tensor, torch.Tensor]], start: int
    ) -> torch.Tensor:
        """The decoder layers for ``hidden`` at positions ``start`` onwards; K/V written into ``caches``."""
        end = start + hidden.shape[1]
        cos, sin = self._cos[:, start:end], self._sin[:, start:end]
        for layer, (keys, values) in zip(self._layers, caches, strict=True):
            attended = self._attention(layer, layer.input_layernorm(hidden), keys, values, start, cos, sin)
            hidden = hidden + attended
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self._predictor.model.norm(hidden)

    def _attention(
        self,
        layer: Any,
        hidden: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        start: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        attention = layer.self_attn
        query, key, value = project_qkv(attention, hidden, cos, sin, apply_rotary_pos_emb)
        end = start + hidden.shape[1]
        keys[:, :, start:end] = key
        values[:, :, start:end] = value
        # Only the first call has more than one query (hidden state + codebook 0, starting at 0): causal.
        return attend(attention, query, keys[:, :, :end], values[:, :, :end], is_causal=hidden.shape[1] > 1)


def frame_step_predictor(talker: Any, mode: str) -> CodePredictor:
    """The predictor the engine's frame step runs for ``mode``: the package's forward (``reference``) or
    the static loop (``auto``, ``static``, ``cuda_graphs``: on a GPU the frame step's own CUDA graphs hold
    it). ``cuda_graphs`` on a CPU and unknown modes are refused, naming the valid ones."""
    _check_mode(talker, mode)
    return ReferenceCodePredictor(talker) if mode == "reference" else StaticCodePredictor(talker)


def _check_mode(talker: Any, mode: str) -> None:
    if mode not in CODE_PREDICTOR_MODES:
        raise ValueError(f"code_predictor {mode!r}; valid: {', '.join(CODE_PREDICTOR_MODES)}")
    if mode == "cuda_graphs" and talker.device.type != "cuda":
        raise ValueError("code_predictor=cuda_graphs needs a CUDA device; on a CPU: static or reference")
