"""Codebooks 1-15 of a frame: the code predictor's 15 small autoregressive steps for every active row.

Three ways to run the same computation, chosen by ``EngineConfig.code_predictor``:

- ``reference``: the predictor's own ``forward`` per step with a fresh ``DynamicCache``, as the package
  runs it (kept as the ground truth the others are tested against);
- ``static``: our own loop over the predictor's layers (its modules, its weights) with the K/V buffers
  allocated once per call and every shape fixed by the batch size. No cache objects, no mask building,
  no host syncs: on a CPU this alone removes most of the per-step overhead;
- ``cuda_graphs``: the static loop captured once per batch-size bucket into a CUDA graph at start-up and
  replayed per frame (rows padded to the bucket), so a frame's ~1,500 small kernels launch as one.

All three sample with the same per-row parameters and counter-based noise (``sampling.sample_tokens``), so
they agree token for token (greedy output is tested equal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from qwen_tts.core.models.modeling_qwen3_tts import apply_rotary_pos_emb
from transformers.cache_utils import DynamicCache

from .attention import attend, project_qkv
from .config import CODE_PREDICTOR_MODES
from .graphs import capture_graph
from .requests import NUM_CODE_GROUPS
from .sampling import SamplerRows, sample, sample_tokens

logger = logging.getLogger(__name__)

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


@dataclass
class _GraphSlot:
    """The fixed input/output buffers of one batch-size bucket, and its graph (None: replay eagerly)."""

    past_hidden: torch.Tensor
    cb0: torch.Tensor
    rows: SamplerRows
    frame_index: torch.Tensor
    codes: torch.Tensor | None = None
    graph: Any = None

    @classmethod
    def allocate(cls, bucket: int, hidden_size: int, dtype: torch.dtype, device: torch.device) -> _GraphSlot:
        def longs() -> torch.Tensor:
            return torch.zeros(bucket, dtype=torch.long, device=device)

        return cls(
            past_hidden=torch.zeros(bucket, 1, hidden_size, dtype=dtype, device=device),
            cb0=longs(),
            rows=SamplerRows(
                do_sample=torch.zeros(bucket, dtype=torch.bool, device=device),
                temperature=torch.ones(bucket, dtype=torch.float32, device=device),
                top_k=longs(),
                top_p=torch.ones(bucket, dtype=torch.float32, device=device),
                seed=longs(),
            ),
            frame_index=longs(),
        )

    def load(
        self, past_hidden: torch.Tensor, cb0: torch.Tensor, rows: SamplerRows, frame_index: torch.Tensor
    ) -> None:
        """Copy a batch into the first rows; rows past it keep their last values (padding, ignored)."""
        batch = past_hidden.shape[0]
        self.past_hidden[:batch].copy_(past_hidden)
        self.cb0[:batch].copy_(cb0)
        self.frame_index[:batch].copy_(frame_index)
        for name in ("do_sample", "temperature", "top_k", "top_p", "seed"):
            getattr(self.rows, name)[:batch].copy_(getattr(rows, name))


class GraphedCodePredictor:
    """The static predictor per batch-size bucket: captured CUDA graphs on a GPU, padded eager elsewhere.

    Batches larger than the biggest bucket run the static predictor eagerly.
    """

    def __init__(self, talker: Any, buckets: list[int], *, capture: bool) -> None:
        self._static = StaticCodePredictor(talker, sync_free=True)
        self._buckets = sorted(set(buckets))
        weight = talker.codec_head.weight
        hidden_size = int(talker.config.hidden_size)
        self._slots = {
            bucket: _GraphSlot.allocate(bucket, hidden_size, weight.dtype, weight.device)
            for bucket in self._buckets
        }
        if capture:
            with torch.inference_mode():
                for bucket in self._buckets:
                    self._capture(self._slots[bucket])
            logger.info("code predictor captured as CUDA graphs for batch sizes %s", self._buckets)

    def _run(self, slot: _GraphSlot) -> torch.Tensor:
        return self._static.predict(slot.past_hidden, slot.cb0, slot.rows, slot.frame_index)

    def _capture(self, slot: _GraphSlot) -> None:
        # Each bucket keeps its own memory pool: its output (``codes``) is allocated inside the graph and
        # read after the replay, so no other graph may reuse that memory.
        slot.graph, slot.codes = capture_graph(lambda: self._run(slot))

    def predict(
        self, past_hidden: torch.Tensor, cb0: torch.Tensor, rows: SamplerRows, frame_index: torch.Tensor
    ) -> torch.Tensor:
        batch = past_hidden.shape[0]
        bucket = next((b for b in self._buckets if b >= batch), None)
        if bucket is None:
            return self._static.predict(past_hidden, cb0, rows, frame_index)
        slot = self._slots[bucket]
        slot.load(past_hidden, cb0, rows, frame_index)
        if slot.graph is not None:
            slot.graph.replay()
        else:
            slot.codes = self._run(slot)
        assert slot.codes is not None
        # A copy: the next replay overwrites the graph's output buffer.
        return slot.codes[:batch].clone()


def frame_step_predictor(talker: Any, mode: str) -> CodePredictor:
    """The predictor the engine's frame step runs for ``mode``: the package's forward (``reference``) or
    the static loop (``auto``, ``static``, ``cuda_graphs``: on a GPU the frame step's own CUDA graphs hold
    it). Refuses what ``build_code_predictor`` refuses."""
    _check_mode(talker, mode)
    return ReferenceCodePredictor(talker) if mode == "reference" else StaticCodePredictor(talker)


def _check_mode(talker: Any, mode: str) -> None:
    if mode not in CODE_PREDICTOR_MODES:
        raise ValueError(f"code_predictor {mode!r}; valid: {', '.join(CODE_PREDICTOR_MODES)}")
    if mode == "cuda_graphs" and talker.device.type != "cuda":
        raise ValueError("code_predictor=cuda_graphs needs a CUDA device; on a CPU: static or reference")


def build_code_predictor(talker: Any, mode: str, buckets: list[int]) -> CodePredictor:
    """The predictor for ``mode`` (see the module docstring); ``auto``: CUDA graphs on a GPU (static if the
    capture fails), else static."""
    _check_mode(talker, mode)
    on_gpu = talker.device.type == "cuda"
    if mode == "auto":
        if not on_gpu:
            return StaticCodePredictor(talker)
        try:
            return GraphedCodePredictor(talker, buckets, capture=True)
        except RuntimeError as error:  # serve without graphs rather than not at all; said once, loudly
            logger.warning("CUDA graph capture failed (%s); the code predictor runs eagerly", error)
            torch.cuda.empty_cache()
            return StaticCodePredictor(talker)
    if mode == "reference":
        return ReferenceCodePredictor(talker)
    if mode == "static":
        return StaticCodePredictor(talker)
    return GraphedCodePredictor(talker, buckets, capture=True)  # cuda_graphs
