"""Reusable voice prompts (speaker embedding + reference codes) from reference clips, one batch at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .requests import (
    NUM_CODE_GROUPS,
    Capability,
    InvalidRequestError,
    ModelSpec,
    RequestLimits,
    SynthesisRequest,
)
from .requests import validate as validate_request


@dataclass
class VoicePrompt:
    speaker_embedding: np.ndarray  # float32 [D]
    ref_codes: np.ndarray  # int64 [T, 16]; [0, 16] in x-vector-only mode


def validate_clip(request: SynthesisRequest, spec: ModelSpec, limits: RequestLimits) -> SynthesisRequest:
    """A voice_prompt request is a clone request without text to speak: the same clip checks apply."""
    if request.ref_audio is None:
        raise InvalidRequestError("ref_audio is required")
    return validate_request(
        SynthesisRequest(
            capability=Capability.VOICE_CLONE,
            text="-",
            ref_audio=request.ref_audio,
            ref_sample_rate=request.ref_sample_rate,
            ref_text=request.ref_text,
            x_vector_only=request.x_vector_only,
        ),
        spec,
        limits,
    )


@torch.inference_mode()
def extract_voice_prompts(tts: Any, requests: list[SynthesisRequest]) -> list[VoicePrompt]:
    """One call into the package for the whole batch (codes are encoded together)."""
    items = tts.create_voice_clone_prompt(
        ref_audio=[(r.ref_audio, r.ref_sample_rate) for r in requests],
        ref_text=[r.ref_text if r.uses_icl else None for r in requests],
        x_vector_only_mode=[not r.uses_icl for r in requests],
    )
    prompts = []
    for item in items:
        codes = item.ref_code
        prompts.append(
            VoicePrompt(
                speaker_embedding=item.ref_spk_embedding.float().cpu().numpy().astype(np.float32),
                ref_codes=(
                    codes.cpu().numpy().astype(np.int64)
                    if codes is not None
                    else np.zeros((0, NUM_CODE_GROUPS), dtype=np.int64)
                ),
            )
        )
    return prompts
