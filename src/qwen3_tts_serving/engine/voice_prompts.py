"""Reusable voice prompts (speaker embedding + reference codes) from reference clips, one batch at a time."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from contextlib import nullcontext
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

logger = logging.getLogger(__name__)


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


class VoicePromptWorker:
    """Extracts voice prompts on its own thread (and its own CUDA stream), beside the engine's frame steps.

    The engine model shares its Base weights with it: extraction (speaker encoder and codec encoder) never
    runs on the engine thread, so streams keep stepping while a clip is encoded. Clips waiting together are
    extracted in one call. ``reply`` gets the prompt, or the exception that failed the batch.
    """

    def __init__(self, tts: Any, limits: RequestLimits, *, max_batch: int = 8) -> None:
        self.tts = tts
        self.limits = limits
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[SynthesisRequest, Callable[[Any], None]] | None] = queue.Queue()
        device = tts.device if isinstance(getattr(tts, "device", None), torch.device) else None
        self._cuda_stream = (
            torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
        )
        self._thread = threading.Thread(target=self._run, name="voice-prompts", daemon=True)
        self._thread.start()

    def validate(self, request: SynthesisRequest, spec: ModelSpec) -> SynthesisRequest:
        return validate_clip(request, spec, self.limits)

    def submit(self, request: SynthesisRequest, reply: Callable[[Any], None]) -> None:
        self._queue.put((request, reply))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self._extract(batch)

    def _extract(self, batch: list[tuple[SynthesisRequest, Callable[[Any], None]]]) -> None:
        try:
            with torch.cuda.stream(self._cuda_stream) if self._cuda_stream is not None else nullcontext():
                prompts: list[Any] = extract_voice_prompts(self.tts, [request for request, _ in batch])
        except Exception as error:  # the batch fails, the worker goes on
            prompts = [error] * len(batch)
        for (_, reply), prompt in zip(batch, prompts, strict=True):
            try:
                reply(prompt)
            except Exception:
                logger.exception("could not send a voice prompt")
