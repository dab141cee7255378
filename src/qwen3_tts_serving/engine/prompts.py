"""Talker prompts built by the qwen-tts package itself, for a whole entry batch at once.

The package's ``generate_*`` methods tokenize, validate and assemble the prompt (role tokens, instruct,
language / speaker codec prefix, in-context clone prompt, trailing text track) and then hand everything
to ``talker.generate``. We let them run up to that call and take its arguments, so our prompts are the
package's prompts by construction, and the step-by-step generation is ours.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .requests import Capability, SynthesisRequest
from .transfer import to_device, to_host


class _PromptCaptured(Exception):
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("prompt captured")
        self.kwargs = kwargs


@dataclass
class PromptBatch:
    inputs_embeds: torch.Tensor  # [B, L, D], left-padded
    attention_mask: torch.Tensor  # long [B, L]
    trailing_text: list[torch.Tensor]  # per row [N_i, D]: text still to feed, one row per step
    tts_pad_embed: torch.Tensor  # [1, 1, D]
    tts_eos_embed: torch.Tensor  # [D]


@contextmanager
def _capturing_talker_generate(model: Any):
    talker = model.model.talker

    def capture(**kwargs: Any) -> None:
        raise _PromptCaptured(kwargs)

    talker.generate = capture
    try:
        yield
    finally:
        del talker.generate  # the instance attribute shadowed the class method


class PromptBuilder:
    """Builds prompts for requests of one capability with a loaded ``Qwen3TTSModel``."""

    def __init__(self, tts_model: Any, capability: Capability) -> None:
        self.tts = tts_model
        self.capability = capability
        config = tts_model.model.config
        self._special_ids = (config.tts_bos_token_id, config.tts_eos_token_id, config.tts_pad_token_id)

    @torch.inference_mode()
    def build(self, requests: list[SynthesisRequest], voice_prompts: list[Any] | None = None) -> PromptBatch:
        with _capturing_talker_generate(self.tts):
            try:
                self._call_package(requests, voice_prompts)
            except _PromptCaptured as captured:
                return self._to_batch(captured.kwargs)
        raise RuntimeError("qwen-tts did not reach talker.generate")

    def _call_package(self, requests: list[SynthesisRequest], voice_prompts: list[Any] | None) -> None:
        texts = [r.text for r in requests]
        languages = [r.language for r in requests]
        # The package's default text mode per capability, except for voice-agent streams whose text is
        # still arriving: those need the streaming-text layout (text trailing one token per frame).
        non_streaming = [not r.text_open and self.capability is not Capability.VOICE_CLONE for r in requests]
        if len(set(non_streaming)) > 1:
            raise ValueError("a prompt batch must share one text mode")
        if self.capability is Capability.CUSTOM_VOICE:
            self.tts.generate_custom_voice(
                text=texts,
                speaker=[r.speaker for r in requests],
                language=languages,
                instruct=[r.instruct or "" for r in requests],
                non_streaming_mode=non_streaming[0],
            )
        elif self.capability is Capability.VOICE_DESIGN:
            self.tts.generate_voice_design(
                text=texts,
                instruct=[r.instruct for r in requests],
                language=languages,
                non_streaming_mode=non_streaming[0],
            )
        else:
            self.tts.generate_voice_clone(
                text=texts,
                language=languages,
                voice_clone_prompt=voice_prompts,
                non_streaming_mode=non_streaming[0],
            )

    def _to_batch(self, kwargs: dict[str, Any]) -> PromptBatch:
        tts_pad = kwargs["tts_pad_embed"]
        trailing = kwargs["trailing_text_hidden"]
        rows = [self._strip_padding(trailing[i], tts_pad.reshape(-1)) for i in range(trailing.shape[0])]
        return PromptBatch(
            inputs_embeds=kwargs["inputs_embeds"],
            attention_mask=kwargs["attention_mask"],
            trailing_text=rows,
            tts_pad_embed=tts_pad,
            tts_eos_embed=self.text_embeddings_for([self._special_ids[1]])[0],
        )

    @staticmethod
    def _strip_padding(rows: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        # The package pads every row's trailing text with tts_pad to the longest; feeding tts_pad is
        # also what happens once a track is used up, so the real length is what precedes the padding.
        is_pad = to_host((rows == pad).all(dim=-1))
        real = np.flatnonzero(~is_pad)
        end = int(real[-1]) + 1 if real.size else 0
        return rows[:end]

    @torch.inference_mode()
    def text_embeddings_for(self, token_ids: list[int]) -> torch.Tensor:
        """Projected text embeddings [N, D] for the trailing text track (voice agents' appended text)."""
        talker = self.tts.model.talker
        ids = to_device([token_ids], torch.long, talker.device)
        return talker.text_projection(talker.get_text_embeddings()(ids))[0]

    @torch.inference_mode()
    def clone_prompt_items(self, requests: list[SynthesisRequest]) -> list[Any]:
        """The package's VoiceClonePromptItem per request: clips are encoded (one batched call to the
        package), precomputed prompts are taken as they are."""
        from qwen_tts.inference.qwen3_tts_model import VoiceClonePromptItem

        clip_rows = [i for i, r in enumerate(requests) if r.ref_audio is not None]
        items: list[Any] = [None] * len(requests)
        if clip_rows:
            extracted = self.tts.create_voice_clone_prompt(
                ref_audio=[(requests[i].ref_audio, requests[i].ref_sample_rate) for i in clip_rows],
                ref_text=[requests[i].ref_text if requests[i].uses_icl else None for i in clip_rows],
                x_vector_only_mode=[not requests[i].uses_icl for i in clip_rows],
            )
            for row, item in zip(clip_rows, extracted, strict=True):
                items[row] = item
        device = self.tts.model.talker.device
        for index, request in enumerate(requests):
            if items[index] is not None:
                continue
            icl = request.uses_icl and request.ref_codes is not None and len(request.ref_codes) > 0
            items[index] = VoiceClonePromptItem(
                ref_code=torch.as_tensor(request.ref_codes, dtype=torch.long, device=device) if icl else None,
                ref_spk_embedding=torch.as_tensor(
                    np.asarray(request.speaker_embedding, dtype=np.float32), device=device
                ),
                x_vector_only_mode=not icl,
                icl_mode=icl,
                ref_text=request.ref_text if icl else None,
            )
        return items
