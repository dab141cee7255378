"""Stateful streaming decoding with the 12 Hz codec decoder: every frame is decoded once.

The decoder is causal end to end: quantizer lookups and pointwise layers, causal convolutions (zero
padding on the left), transposed convolutions whose overlapping tail is trimmed, and a sliding-window
transformer. So each stream can carry what its next chunk needs from the past: the last inputs of every
convolution and the keys/values of the last ``window - 1`` frames of every transformer layer. A chunk is
then decoded on its own new frames, and the chunks join into exactly the waveform of one whole decode
(tested to float rounding), where the windowed re-decode (``decoder.ChunkDecoder``) re-ran ~72 frames of
left context for every chunk of 2-4 frames and was only close.

Streams whose chunks have the same length share one batched call; their states are stacked for the call
and split again afterwards (one stack per state tensor a call, not one per layer). Every call has static
shapes: a state always holds ``window - 1`` frames of keys/values (those before the stream's start are
masked), so on a GPU each (batch bucket, chunk length) pair is captured once as a CUDA graph and a chunk
costs a few copies and one replay, not the decoder's hundreds of kernel launches.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from qwen_tts.core.tokenizer_12hz import modeling_qwen3_tts_tokenizer_v2 as codec
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import apply_rotary_pos_emb

from . import graphs
from .attention import attend, attention_backends, project_qkv
from .requests import NUM_CODE_GROUPS
from .streams import Stream
from .transfer import to_device, to_host

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class DecoderState:
    """What one stream's next chunk needs from its past (created empty: the stream's start)."""

    frames: int = 0  # frames decoded so far: the position of the next one
    kv_length: int = 0  # frames of ``kv`` that are real: the last ones; those before are masked
    conv_history: torch.Tensor | None = None  # [S]: every convolution's last inputs, flattened
    kv: torch.Tensor | None = None  # [layers, 2, kv_heads, window - 1, head_dim]: the last frames


@dataclass
class _ConvSlot:
    offset: int
    channels: int
    history: int  # input steps the convolution needs from before the chunk


@dataclass
class _Call:
    """One batched decoder call: the stacked past of its rows and the new histories as they are made."""

    conv_history: torch.Tensor  # [B, S]
    kv: torch.Tensor  # [B, layers, 2, kv_heads, window - 1, head_dim]
    kv_lengths: torch.Tensor  # long [B]: real cached frames per row (the last ones)
    positions: torch.Tensor  # long [B]: the position of each row's first new frame
    new_history: dict[int, torch.Tensor] = field(default_factory=dict)  # offset -> [B, C * history]
    new_kv: list[torch.Tensor] = field(default_factory=list)  # [B, 2, kv_heads, window - 1 + T, head_dim]


@dataclass
class _StaticBuffers:
    """What every captured call reads and writes, allocated once outside the graphs (so the graphs keep
    no outputs of their own in their pool): a call's rows are the first ``batch`` of each."""

    conv_history: torch.Tensor
    kv: torch.Tensor
    kv_lengths: torch.Tensor
    positions: torch.Tensor
    codes: dict[int, torch.Tensor]  # chunk length -> [rows, T, 16]
    new_history: torch.Tensor
    new_kv: torch.Tensor
    wav: dict[int, torch.Tensor]  # chunk length -> [rows, T * samples per frame]


class StreamingDecoder:
    def __init__(self, speech_tokenizer: Any, context_frames: int, primed_cache_size: int = 0) -> None:
        self._decoder = speech_tokenizer.model.decoder
        self.samples_per_frame = int(speech_tokenizer.model.get_decode_upsample_rate())
        self.sample_rate = int(speech_tokenizer.model.get_output_sample_rate())
        self.context_frames = context_frames  # of a voice clone's reference codes, fed before its first chunk
        # States primed with a reference, by its codes: a voice used again starts without re-decoding it.
        self._primed: OrderedDict[bytes, DecoderState] = OrderedDict()
        self._primed_cache_size = primed_cache_size
        transformer = self._decoder.pre_transformer
        self._layers = list(transformer.layers[: transformer.config.num_hidden_layers])
        attention = self._layers[0].self_attn
        self._kv_heads = int(transformer.config.num_key_value_heads)
        self._head_dim = int(attention.head_dim)
        self._window = int(transformer.config.sliding_window or 0)
        if self._window < 1:
            raise ValueError("streaming decoding needs the codec transformer's sliding window")
        self._slots: dict[int, _ConvSlot] = {}
        self._history_size = 0
        self._plan_conv_slots()
        weight = transformer.input_proj.weight
        self._dtype, self._device = weight.dtype, weight.device
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._batch_buckets: list[int] = []
        self._buffers: _StaticBuffers | None = None

    # ----------------------------------------------------------------------------------------- layout
    def _plan_conv_slots(self) -> None:
        """Give every convolution with a past a slice of the flat history, in forward order."""
        for module in self._decoder.modules():
            if isinstance(module, codec.Qwen3TTSTokenizerV2CausalConvNet):
                if module.stride != 1:
                    raise ValueError("streaming decoding supports stride-1 causal convolutions only")
                self._add_slot(module, module.conv.in_channels, module.padding)
            elif isinstance(module, codec.Qwen3TTSTokenizerV2CausalTransConvNet):
                kernel, stride = module.conv.kernel_size[0], module.conv.stride[0]
                if module.right_pad != kernel - stride or module.left_pad:
                    raise ValueError("streaming decoding expects transposed convolutions cut on the right")
                self._add_slot(module, module.conv.in_channels, -(-kernel // stride) - 1)

    def _add_slot(self, module: torch.nn.Module, channels: int, history: int) -> None:
        self._slots[id(module)] = _ConvSlot(self._history_size, channels, history)
        self._history_size += channels * history

    def new_state(self) -> DecoderState:
        return DecoderState(conv_history=self._zeros(self._history_size), kv=self._zeros(*self._kv_shape))

    @property
    def _kv_shape(self) -> tuple[int, ...]:
        return (len(self._layers), 2, self._kv_heads, self._window - 1, self._head_dim)

    def _zeros(self, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dtype or self._dtype, device=self._device)

    # ----------------------------------------------------------------------------------------- graphs
    @property
    def graphed(self) -> bool:
        return bool(self._graphs)

    def capture(self, batch_buckets: list[int], chunk_lengths: list[int]) -> None:
        """Capture a call for every (batch bucket, chunk length) pair (start-up, CUDA only). Other chunk
        lengths (a clone's priming, an odd last chunk) and larger batches run the same code eagerly."""
        largest = max(batch_buckets)
        buffers = _StaticBuffers(
            conv_history=self._zeros(largest, self._history_size),
            kv=self._zeros(largest, *self._kv_shape),
            kv_lengths=self._zeros(largest, dtype=torch.long),
            positions=self._zeros(largest, dtype=torch.long),
            codes={t: self._zeros(largest, t, NUM_CODE_GROUPS, dtype=torch.long) for t in chunk_lengths},
            new_history=self._zeros(largest, self._history_size),
            new_kv=self._zeros(largest, *self._kv_shape),
            wav={t: self._zeros(largest, t * self.samples_per_frame) for t in chunk_lengths},
        )
        # A family of its own: these replay on the decoder's stream while a frame step's graph runs.
        family = graphs.new_family(self._device)
        with torch.inference_mode(), attention_backends(self._device):
            for batch in batch_buckets:
                for frames in chunk_lengths:
                    run = functools.partial(self._captured_call, buffers, batch, frames)
                    self._graphs[(batch, frames)], _ = graphs.capture_graph(run, family)
        self._buffers, self._batch_buckets = buffers, sorted(batch_buckets)
        logger.info(
            "codec decoder captured as %d CUDA graphs (batch %s x chunk frames %s)",
            len(self._graphs),
            self._batch_buckets,
            sorted(chunk_lengths),
        )

    def drop_graphs(self) -> None:
        self._graphs.clear()
        self._buffers, self._batch_buckets = None, []

    def _captured_call(self, buffers: _StaticBuffers, batch: int, frames: int) -> None:
        rows = slice(0, batch)
        wav, new_history, new_kv = self._call(
            buffers.codes[frames][rows],
            buffers.conv_history[rows],
            buffers.kv[rows],
            buffers.kv_lengths[rows],
            buffers.positions[rows],
        )
        buffers.wav[frames][rows].copy_(wav)
        buffers.new_history[rows].copy_(new_history)
        buffers.new_kv[rows].copy_(new_kv)

    # ------------------------------------------------------------------------------------------- API
    def decode_streams(self, streams: list[Stream]) -> list[np.ndarray]:
        """Audio of each stream's frames not yet sent; a stream's first call starts its state (a clone's
        first call feeds up to ``context_frames`` reference codes first, as the package decodes them)."""
        # Every stream's new frames in one gather (a stack per stream would be a launch per stream),
        # then each stream's rows as a view of it.
        pending = [frame for stream in streams for frame in stream.frames[stream.emitted_frames :]]
        gathered = (
            torch.stack(pending)
            if pending
            else torch.zeros(0, NUM_CODE_GROUPS, dtype=torch.long, device=self._device)
        )
        items = []
        start = 0
        for stream in streams:
            new = stream.frame_count - stream.emitted_frames
            if stream.decoder_state is None:
                stream.decoder_state = self._start(stream.context_codes, stream.request.ref_codes)
            items.append((stream.decoder_state, gathered[start : start + new], new))
            start += new
        return self.decode(items)

    def _start(
        self, context_codes: torch.Tensor | None, host_codes: np.ndarray | None = None
    ) -> DecoderState:
        """A stream's first state: empty, or primed with (the last ``context_frames`` of) its reference,
        taken from the cache when the same reference was primed before. ``host_codes``: the same codes on
        the host, when the request brought them (a voice prompt): the cache key then costs no device sync."""
        if context_codes is None or not self.context_frames:
            return self.new_state()
        context = context_codes[-self.context_frames :]
        host = host_codes[-self.context_frames :] if host_codes is not None else context.cpu().numpy()
        key = hashlib.blake2b(np.ascontiguousarray(host, dtype=np.int64).tobytes(), digest_size=16).digest()
        cached = self._primed.get(key)
        if cached is None:
            cached = self.new_state()
            self.decode([(cached, context, 0)])
            if self._primed_cache_size:
                self._primed[key] = cached
                while len(self._primed) > self._primed_cache_size:
                    self._primed.popitem(last=False)
        else:
            self._primed.move_to_end(key)
        # A copy sharing the tensors: a state's tensors are replaced after each chunk, never written into.
        return dataclasses.replace(cached)

    @torch.inference_mode()
    def decode(self, items: list[tuple[DecoderState, torch.Tensor, int]]) -> list[np.ndarray]:
        """Audio of the last ``new`` frames of each ``(state, codes [T, 16], new)``; every frame of
        ``codes`` is fed (earlier ones only prime the state). Items of equal ``T`` share one call."""
        results: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(items)
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, (_, codes, new) in enumerate(items):
            if not 0 <= new <= codes.shape[0]:
                raise ValueError(f"{new} new frames in a chunk of {codes.shape[0]}")
            if codes.shape[0]:
                by_length[codes.shape[0]].append(index)
        # A captured call holds at most the largest bucket's rows (more can be due: streams that ended this
        # step and the newcomers that took their slots).
        most = self._batch_buckets[-1] if self._batch_buckets else len(items)
        for group in by_length.values():
            for start in range(0, len(group), most):
                indices = group[start : start + most]
                states = [items[i][0] for i in indices]
                codes = torch.stack([items[i][1] for i in indices]).to(self._device).clamp(min=0)
                wav = to_host(self._decode_batch(states, codes).float())
                for row, index in enumerate(indices):
                    keep = items[index][2] * self.samples_per_frame
                    results[index] = np.ascontiguousarray(wav[row, wav.shape[1] - keep :], dtype=np.float32)
        return results

    def _decode_batch(self, states: list[DecoderState], codes: torch.Tensor) -> torch.Tensor:
        """The audio [B, samples] of ``codes`` [B, T, 16] for these states, which move on by T frames."""
        rows, frames = len(states), int(codes.shape[1])
        kv_lengths = to_device([s.kv_length for s in states], torch.long, self._device)
        positions = to_device([s.frames for s in states], torch.long, self._device)
        bucket = next((b for b in self._batch_buckets if b >= rows), 0)
        captured = self._graphs.get((bucket, frames))
        if captured is None:
            history = torch.stack([s.conv_history for s in states])  # type: ignore[misc]
            kv = torch.stack([s.kv for s in states])  # type: ignore[misc]
            with attention_backends(self._device):
                wav, new_history, new_kv = self._call(codes, history, kv, kv_lengths, positions)
        else:
            buffers = self._buffers
            assert buffers is not None
            # Rows past ``rows`` keep an earlier call's values: each row is computed on its own.
            torch.stack([s.conv_history for s in states], out=buffers.conv_history[:rows])  # type: ignore[misc]
            torch.stack([s.kv for s in states], out=buffers.kv[:rows])  # type: ignore[misc]
            buffers.kv_lengths[:rows].copy_(kv_lengths)
            buffers.positions[:rows].copy_(positions)
            buffers.codes[frames][:rows].copy_(codes)
            captured.replay()
            # Copies: the next replay writes the same buffers.
            wav = buffers.wav[frames][:rows].clone()
            new_history = buffers.new_history[:rows].clone()
            new_kv = buffers.new_kv[:rows].clone()
        for row, state in enumerate(states):
            state.conv_history = new_history[row]
            state.kv = new_kv[row]
            state.kv_length = min(state.kv_length + frames, self._window - 1)
            state.frames += frames
        return wav

    def _call(
        self,
        codes: torch.Tensor,
        conv_history: torch.Tensor,
        kv: torch.Tensor,
        kv_lengths: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One call of static shapes (what a graph captures): audio [B, T * samples per frame] of ``codes``
        [B, T, 16], and the rows' next conv history [B, S] and keys/values [B, layers, 2, kv_heads,
        window - 1, head_dim]."""
        call = _Call(conv_history=conv_history, kv=kv, kv_lengths=kv_lengths, positions=positions)
        wav = self._forward(codes.transpose(1, 2), call)
        parts = [call.new_history[offset] for offset in sorted(call.new_history)]
        new_history = torch.cat(parts, dim=1) if parts else conv_history.clone()
        new_kv = torch.stack(call.new_kv, dim=1)[:, :, :, :, codes.shape[1] :]
        return wav[:, 0], new_history, new_kv

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, codes: torch.Tensor, call: _Call) -> torch.Tensor:
        """``Qwen3TTSTokenizerV2Decoder.forward`` on new frames only, the past read from ``call``."""
        decoder = self._decoder
        hidden = decoder.quantizer.decode(codes)
        hidden = self._causal_conv(decoder.pre_conv, hidden, call).transpose(1, 2)
        hidden = self._transformer(hidden, call).permute(0, 2, 1)
        for blocks in decoder.upsample:
            for block in blocks:
                hidden = self._module(block, hidden, call)
        for block in decoder.decoder:
            hidden = self._module(block, hidden, call)
        return hidden.clamp(min=-1, max=1)

    def _module(self, module: torch.nn.Module, hidden: torch.Tensor, call: _Call) -> torch.Tensor:
        if isinstance(module, codec.Qwen3TTSTokenizerV2CausalConvNet):
            return self._causal_conv(module, hidden, call)
        if isinstance(module, codec.Qwen3TTSTokenizerV2CausalTransConvNet):
            return self._trans_conv(module, hidden, call)
        if isinstance(module, codec.Qwen3TTSTokenizerV2ConvNeXtBlock):
            return self._convnext(module, hidden, call)
        if isinstance(module, codec.Qwen3TTSTokenizerV2DecoderDecoderResidualUnit):
            return self._residual_unit(module, hidden, call)
        if isinstance(module, codec.Qwen3TTSTokenizerV2DecoderDecoderBlock):
            for inner in module.block:
                hidden = self._module(inner, hidden, call)
            return hidden
        return module(hidden)  # pointwise in time (SnakeBeta)

    def _past(self, module: torch.nn.Module, hidden: torch.Tensor, call: _Call) -> torch.Tensor:
        """The module's input with its stored past in front; records the new past for the next chunk."""
        slot = self._slots[id(module)]
        if slot.history == 0:
            return hidden
        past = call.conv_history[:, slot.offset : slot.offset + slot.channels * slot.history]
        joined = torch.cat([past.view(-1, slot.channels, slot.history), hidden], dim=2)
        call.new_history[slot.offset] = joined[:, :, -slot.history :].reshape(joined.shape[0], -1)
        return joined

    def _causal_conv(self, module: Any, hidden: torch.Tensor, call: _Call) -> torch.Tensor:
        return module.conv(self._past(module, hidden, call))

    def _trans_conv(self, module: Any, hidden: torch.Tensor, call: _Call) -> torch.Tensor:
        history = self._slots[id(module)].history
        out = module.conv(self._past(module, hidden, call))
        stride = module.conv.stride[0]
        # Outputs of the past frames are already out (or incomplete), the tail waits for the next frame.
        return out[..., history * stride : (history + hidden.shape[-1]) * stride]

    def _convnext(self, module: Any, hidden: torch.Tensor, call: _Call) -> torch.Tensor:
        out = self._causal_conv(module.dwconv, hidden, call).permute(0, 2, 1)
        out = module.pwconv2(module.act(module.pwconv1(module.norm(out))))
        return hidden + (module.gamma * out).permute(0, 2, 1)

    def _residual_unit(self, module: Any, hidden: torch.Tensor, call: _Call) -> torch.Tensor:
        out = self._causal_conv(module.conv1, module.act1(hidden), call)
        return hidden + self._causal_conv(module.conv2, module.act2(out), call)

    # ------------------------------------------------------------------------------------ transformer
    def _transformer(self, hidden: torch.Tensor, call: _Call) -> torch.Tensor:
        transformer = self._decoder.pre_transformer
        hidden = transformer.input_proj(hidden)
        frames = hidden.shape[1]
        positions = call.positions.unsqueeze(1) + torch.arange(frames, device=hidden.device)
        cos, sin = transformer.rotary_emb(hidden, positions)
        mask = self._attention_mask(call, frames)
        for index, layer in enumerate(self._layers):
            attended = self._attention(layer, layer.input_layernorm(hidden), call, index, cos, sin, mask)
            hidden = hidden + layer.self_attn_layer_scale(attended)
            hidden = hidden + layer.mlp_layer_scale(layer.mlp(layer.post_attention_layernorm(hidden)))
        return transformer.output_proj(transformer.norm(hidden))

    def _attention_mask(self, call: _Call, frames: int) -> torch.Tensor:
        """[B, 1, T, L + T]: causal, within the sliding window, and not the left padding of short rows."""
        cached = call.kv.shape[4]
        device = call.positions.device
        slots = torch.arange(cached + frames, device=device)
        real = slots.unsqueeze(0) >= (cached - call.kv_lengths).unsqueeze(1)  # [B, L + T]
        query = torch.arange(frames, device=device) + cached  # slot of each new frame
        allowed = slots.unsqueeze(0) <= query.unsqueeze(1)  # [T, L + T]
        allowed &= slots.unsqueeze(0) > query.unsqueeze(1) - self._window
        return (real.unsqueeze(1) & allowed.unsqueeze(0)).unsqueeze(1)

    def _attention(
        self,
        layer: Any,
        hidden: torch.Tensor,
        call: _Call,
        index: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        attention = layer.self_attn
        query, key, value = project_qkv(attention, hidden, cos, sin, apply_rotary_pos_emb)
        keys = torch.cat([call.kv[:, index, 0], key], dim=2)
        values = torch.cat([call.kv[:, index, 1], value], dim=2)
        call.new_kv.append(torch.stack([keys, values], dim=1))
        return attend(attention, query, keys, values, attn_mask=mask)
