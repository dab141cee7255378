"""Incremental waveform decoding with the causal 12 Hz codec decoder, by re-decoding left context.

The engine's default is ``streaming_decoder.StreamingDecoder`` (exact, and each frame decoded once); this
windowed decoder is the fallback (``decoder_mode=windowed``) that only uses the decoder's plain forward.
Each chunk is decoded together with up to ``left_context`` earlier frames and only the new part is kept:
the decoder is causal (convolutions and a sliding-window transformer), so with enough context the chunks
join into the same waveform as one whole decode. Windows of equal length are decoded in one call.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from .config import EngineConfig
from .requests import NUM_CODE_GROUPS
from .streaming_decoder import StreamingDecoder
from .streams import Stream
from .transfer import to_host


class ChunkDecoder:
    def __init__(self, speech_tokenizer: Any, left_context: int) -> None:
        self._decoder = speech_tokenizer.model.decoder
        self.samples_per_frame = int(speech_tokenizer.model.get_decode_upsample_rate())
        self.sample_rate = int(speech_tokenizer.model.get_output_sample_rate())
        self.left_context = left_context

    def decode_streams(self, streams: list[Stream]) -> list[np.ndarray]:
        """Audio of each stream's frames not yet sent."""
        windows = [self.window(self._codes_tail(s), s.frame_count - s.emitted_frames) for s in streams]
        return self.decode(windows)

    def _codes_tail(self, stream: Stream) -> torch.Tensor:
        needed = stream.frame_count - stream.emitted_frames + self.left_context
        tail = stream.frames[-needed:] if needed else []
        codes = torch.stack(tail) if tail else torch.zeros(0, NUM_CODE_GROUPS, dtype=torch.long)
        missing = needed - len(tail)
        if missing > 0 and stream.context_codes is not None:
            context = stream.context_codes[-missing:].to(codes.device)
            codes = torch.cat([context, codes]) if len(tail) else context
        return codes

    def window(self, codes: torch.Tensor, new_frames: int) -> tuple[torch.Tensor, int]:
        """The frames to decode for the last ``new_frames`` of ``codes`` [T, 16], and how many are new."""
        start = max(0, codes.shape[0] - new_frames - self.left_context)
        return codes[start:], new_frames

    @torch.inference_mode()
    def decode(self, windows: list[tuple[torch.Tensor, int]]) -> list[np.ndarray]:
        """Audio of the new frames of each window; windows of the same length share one decoder call."""
        results: list[np.ndarray | None] = [None] * len(windows)
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, (codes, new_frames) in enumerate(windows):
            if new_frames == 0:
                results[index] = np.zeros(0, dtype=np.float32)
            else:
                by_length[codes.shape[0]].append(index)
        for indices in by_length.values():
            batch = torch.stack([windows[i][0] for i in indices]).transpose(1, 2).clamp(min=0)
            wav = to_host(self._decoder(batch)[:, 0].float())
            for row, index in enumerate(indices):
                keep = windows[index][1] * self.samples_per_frame
                results[index] = np.ascontiguousarray(wav[row, -keep:], dtype=np.float32)
        return [r for r in results if r is not None]


def build_decoder(speech_tokenizer: Any, config: EngineConfig) -> ChunkDecoder | StreamingDecoder:
    """The decoder ``config.decoder_mode`` names; both use ``decoder_left_context_frames`` of context."""
    if config.decoder_mode == "windowed":
        return ChunkDecoder(speech_tokenizer, config.decoder_left_context_frames)
    return StreamingDecoder(
        speech_tokenizer, config.decoder_left_context_frames, config.primed_decoder_cache_size
    )
