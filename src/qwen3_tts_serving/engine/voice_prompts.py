"""Reusable voice prompts (speaker embedding + reference codes) from reference clips, one batch at a time."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

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


class VoiceEncoder(Protocol):
    """Encodes clone clips off the engine's thread; ``reply`` gets the ``VoicePrompt`` or the exception."""

    def submit(self, request: SynthesisRequest, reply: Callable[[Any], None]) -> None: ...


def with_voice_prompt(request: SynthesisRequest, prompt: VoicePrompt) -> SynthesisRequest:
    """The clone request speaking with ``prompt`` (what its clip encodes to) instead of the clip."""
    return dataclasses.replace(
        request,
        ref_audio=None,
        ref_sample_rate=None,
        speaker_embedding=prompt.speaker_embedding,
        ref_codes=prompt.ref_codes if request.uses_icl else None,
    )


def clip_key(request: SynthesisRequest) -> bytes:
    """What a clip's prompt depends on: its samples, their rate and whether codes are extracted."""
    samples = np.ascontiguousarray(request.ref_audio, dtype=np.float32)
    digest = hashlib.blake2b(samples.tobytes(), digest_size=16)
    digest.update(f"{request.ref_sample_rate}:{request.uses_icl}".encode())
    return digest.digest()


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


class StepPacer:
    """Keeps a thread working beside the engine from lengthening its frame steps by more than a share of one.

    CPython runs one thread's Python at a time, so a worker encoding a clip takes turns with the step loop,
    and every turn it takes lengthens the step running meanwhile, by as much Python as the encoding runs
    then. The pacer bounds that by design: it is an engine observer, and while streams run the worker may
    hold the interpreter for ``share`` of the last step's duration, then waits for the next step to end.
    Its kernels, which run without the interpreter, go on meanwhile. An idle engine does not pace it;
    ``share`` 0 turns pacing off. (``benchmarks.prompt_stall`` measures what a clip adds to the longest
    pause between steps, paced and not.)
    """

    def __init__(self, share: float, *, max_wait_s: float = 1.0) -> None:
        self.share = share
        self.max_wait_s = max_wait_s  # a step longer than this (a big admission) lets the worker go on
        self.waits = 0  # slices that ended in a wait for the next step (tests read it)
        self._cond = threading.Condition()
        self._steps = 0
        self._busy = False
        self._slice_s = 0.0
        self._slice_started = 0.0

    # -- the engine's thread (EngineObserver) --------------------------------------------------------
    def step_done(self, *, seconds: float, **_: object) -> None:
        with self._cond:
            self._steps += 1
            self._busy = True
            self._slice_s = self.share * seconds
            self._cond.notify_all()

    def idle(self, **_: object) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def first_audio(self, seconds: float) -> None:
        pass

    def finished(self, reason: str) -> None:
        pass

    # -- the worker's thread --------------------------------------------------------------------------
    @contextmanager
    def paced(self) -> Iterator[None]:
        """Pace the calling thread's Python for the duration of the block."""
        if self.share <= 0:
            yield
            return
        self._slice_started = time.perf_counter()
        sys.setprofile(self._on_event)  # this thread only; it sees every Python and builtin call
        try:
            yield
        finally:
            sys.setprofile(None)

    def _on_event(self, frame: object, event: str, arg: object) -> None:
        if not self._busy or time.perf_counter() - self._slice_started < self._slice_s:
            return
        with self._cond:
            seen = self._steps
            if self._busy:
                self.waits += 1
                self._cond.wait_for(lambda: self._steps != seen or not self._busy, timeout=self.max_wait_s)
        self._slice_started = time.perf_counter()


class VoicePromptWorker:
    """Extracts voice prompts on its own thread (and its own CUDA stream), beside the engine's frame steps.

    The engine model shares its Base weights with it: extraction (speaker encoder and codec encoder) never
    runs on the engine thread, so streams keep stepping while a clip is encoded. Its ``pacer`` goes among
    the engine's observers, so that the worker's Python never lengthens a step by more than ``step_share``
    of one. Clips waiting together are extracted in one call. The last ``cache_size`` prompts are kept by
    clip: a clip sent again (each segment of a long one-off clone carries it) is answered at once, and one
    already being extracted is extracted once for every request waiting on it. ``reply`` gets the prompt,
    or the exception that failed the batch.
    """

    def __init__(
        self,
        tts: Any,
        limits: RequestLimits,
        *,
        max_batch: int = 8,
        step_share: float = 0.5,
        cache_size: int = 64,
    ) -> None:
        self.tts = tts
        self.limits = limits
        self.max_batch = max_batch
        self.cache_size = cache_size
        self.pacer = StepPacer(step_share)
        self._queue: queue.Queue[tuple[bytes, SynthesisRequest] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, VoicePrompt] = OrderedDict()
        self._replies: dict[bytes, list[Callable[[Any], None]]] = {}  # clips queued or being extracted
        device = tts.device if isinstance(getattr(tts, "device", None), torch.device) else None
        self._cuda_stream = (
            torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
        )
        self._thread = threading.Thread(target=self._run, name="voice-prompts", daemon=True)
        self._thread.start()

    def validate(self, request: SynthesisRequest, spec: ModelSpec) -> SynthesisRequest:
        return validate_clip(request, spec, self.limits)

    def submit(self, request: SynthesisRequest, reply: Callable[[Any], None]) -> None:
        key = clip_key(request)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
            elif key in self._replies:
                self._replies[key].append(reply)
                return
            else:
                self._replies[key] = [reply]
        if cached is not None:
            reply(cached)
        else:
            self._queue.put((key, request))

    def stop(self) -> None:
        self.pacer.idle()  # a worker waiting for a step that will not come goes on
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

    def _extract(self, batch: list[tuple[bytes, SynthesisRequest]]) -> None:
        try:
            stream = torch.cuda.stream(self._cuda_stream) if self._cuda_stream is not None else nullcontext()
            with stream, self.pacer.paced():
                prompts: list[Any] = extract_voice_prompts(self.tts, [request for _, request in batch])
        except Exception as error:  # the batch fails, the worker goes on
            prompts = [error] * len(batch)
        for (key, _), prompt in zip(batch, prompts, strict=True):
            with self._lock:
                replies = self._replies.pop(key, [])
                if isinstance(prompt, VoicePrompt) and self.cache_size:
                    self._cache[key] = prompt
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            for reply in replies:
                try:
                    reply(prompt)
                except Exception:
                    logger.exception("could not send a voice prompt")
