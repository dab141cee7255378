"""Stateful streaming decoding with the 12 Hz codec decoder: every frame is decoded once.

The decoder is causal end to end: quantizer lookups and pointwise layers, causal convolutions (zero
padding on the left), transposed convolutions whose overlapping tail is trimmed, and a sliding-window
transformer. So each stream can carry what its next chunk needs from the past: the last inputs of every
convolution and the keys/values of the last ``window - 1`` frames of every transformer layer. A chunk is
then decoded on its own new frames, and the chunks join into exactly the waveform of one whole decode
(tested to float rounding), where the windowed re-decode (``decoder.ChunkDecoder``) re-ran ~72 frames of
left context for every chunk of 2-4 frames and was only close.

Streams whose chunks have the same length share one batched call; their states are stacked for the call
and split again afterwards (one stack and one cat per call, not one per layer).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from qwen_tts.core.tokenizer_12hz import modeling_qwen3_tts_tokenizer_v2 as codec
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import apply_rotary_pos_emb

from .attention import attend, project_qkv
from .requests import NUM_CODE_GROUPS
from .streams import Stream
from .transfer import to_device, to_host


@dataclass(eq=False)
class DecoderState:
    """What one stream's next chunk needs from its past (created empty: the stream's start)."""

    frames: int = 0  # frames decoded so far: the position of the next one
    conv_history: torch.Tensor | None = None  # [S]: every convolution's last inputs, flattened
    kv: torch.Tensor | None = None  # [layers, 2, kv_heads, L, head_dim]: the last L <= window - 1 frames


@dataclass
class _ConvSlot:
    offset: int
    channels: int
    history: int  # input steps the convolution needs from before the chunk


@dataclass
class _Call:
    """One batched decoder call: the stacked past of its rows and the new histories as they are made."""

    conv_history: torch.Tensor  # [B, S]
    kv: torch.Tensor  # [B, layers, 2, kv_heads, L, head_dim], rows left-padded to the longest
    kv_lengths: torch.Tensor  # long [B]: real cached frames per row
    positions: torch.Tensor  # long [B]: the position of each row's first new frame
    new_history: dict[int, torch.Tensor] = field(default_factory=dict)  # offset -> [B, C * history]
    new_kv: list[torch.Tensor] = field(default_factory=list)  # [B, 2, kv_heads, L + T, head_dim] per layer


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
        options = {"dtype": self._dtype, "device": self._device}
        return DecoderState(
            conv_history=torch.zeros(self._history_size, **options),
            kv=torch.zeros(len(self._layers), 2, self._kv_heads, 0, self._head_dim, **options),
        )

    # ------------------------------------------------------------------------------------------- API
    def decode_streams(self, streams: list[Stream]) -> list[np.ndarray]:
        """Audio of each stream's frames not yet sent; a stream's first call starts its state (a clone's
        first call feeds up to ``context_frames`` reference codes first, as the package decodes them)."""
        items = []
        for stream in streams:
            new = stream.frame_count - stream.emitted_frames
            if stream.decoder_state is None:
                stream.decoder_state = self._start(stream.context_codes)
            codes = (
                torch.stack(stream.frames[stream.emitted_frames :])
                if new
                else torch.zeros(0, NUM_CODE_GROUPS, dtype=torch.long, device=self._device)
            )
            items.append((stream.decoder_state, codes, new))
        return self.decode(items)

    def _start(self, context_codes: torch.Tensor | None) -> DecoderState:
        """A stream's first state: empty, or primed with (the last ``context_frames`` of) its reference,
        taken from the cache when the same reference was primed before."""
        if context_codes is None or not self.context_frames:
            return self.new_state()
        context = context_codes[-self.context_frames :]
        key = hashlib.blake2b(context.cpu().numpy().tobytes(), digest_size=16).digest()
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
        for indices in by_length.values():
            states = [items[i][0] for i in indices]
            codes = torch.stack([items[i][1] for i in indices]).to(self._device).clamp(min=0)
            wav = to_host(self._decode_batch(states, codes)[:, 0].float())
            for row, index in enumerate(indices):
                keep = items[index][2] * self.samples_per_frame
                results[index] = np.ascontiguousarray(wav[row, wav.shape[1] - keep :], dtype=np.float32)
        return results

    def _decode_batch(self, states: list[DecoderState], codes: torch.Tensor) -> torch.Tensor:
        call = self._open_call(states)
        wav = self._forward(codes.transpose(1, 2), call)
        self._close_call(states, call, codes.shape[1])
        return wav

    def _open_call(self, states: list[DecoderState]) -> _Call:
        lengths = [s.kv.shape[3] for s in states]  # type: ignore[union-attr]
        longest = max(lengths)
        kv = torch.stack([F.pad(s.kv, (0, 0, longest - s.kv.shape[3], 0)) for s in states])  # type: ignore[union-attr]
        return _Call(
            conv_history=torch.stack([s.conv_history for s in states]),  # type: ignore[misc]
            kv=kv,
            kv_lengths=to_device(lengths, torch.long, self._device),
            positions=to_device([s.frames for s in states], torch.long, self._device),
        )

    def _close_call(self, states: list[DecoderState], call: _Call, frames: int) -> None:
        parts = [call.new_history[offset] for offset in sorted(call.new_history)]
        history = torch.cat(parts, dim=1) if parts else call.conv_history
        kv = torch.stack(call.new_kv, dim=1)  # [B, layers, 2, kv_heads, L + T, head_dim]
        for row, state in enumerate(states):
            keep = min(int(state.kv.shape[3]) + frames, self._window - 1)  # type: ignore[union-attr]
            state.conv_history = history[row]
            state.kv = kv[row, :, :, :, kv.shape[4] - keep :]
            state.frames += frames

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
