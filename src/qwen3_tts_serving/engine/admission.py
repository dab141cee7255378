"""Admitted streams into the running batch: prompts built, then prefilled into their own slots and joined.

The scheduler decides who enters and when; this carries it out. ``prepare`` builds a group's prompts with
one package call, on a GPU on a CUDA stream of its own (the build's host syncs then wait for the build,
not for the frame in flight), and hands what it made to the step's and the decoder's streams. ``join``
prefills a batch of prepared streams into free slots and lets them join the step (``FrameStep.join``).

Whatever fails fails only the streams it concerns, never their batch-mates: a request the package refuses
is found by building the group's prompts one by one, a prompt too long for a slot is refused naming the
setting, and a failed prefill gives its slots back. Failures come back as ``Refusal`` for the engine to
send; nothing here talks to a client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .frame_step import FrameStep, JoinRow
from .prefill import Prefill
from .requests import EngineUnavailableError, InvalidRequestError
from .slot_cache import SlotKVCache
from .streams import Stream
from .transfer import hand_over

logger = logging.getLogger(__name__)

OUT_OF_MEMORY = "the server is out of GPU memory; retry shortly"
_PROMPT_TOO_LONG = "the prompt takes {} talker tokens; this server's slot_max_length is {}: shorten the text"


@dataclass
class Refusal:
    """A stream that cannot join, and the error its client gets."""

    stream: Stream
    error: Exception


def prompt_length(stream: Stream) -> int:
    """Talker tokens of a prepared stream's prompt."""
    assert stream.prompt_embeds is not None
    return int(stream.prompt_embeds.shape[0])


class Admission:
    def __init__(
        self,
        prefill: Prefill,
        cache: SlotKVCache,
        frame_step: FrameStep,
        readers: list[torch.cuda.Stream],
    ) -> None:
        """``readers``: the CUDA streams besides the current one that read what a prompt build makes (the
        decoder's); none off a GPU, where the build runs on the current stream too."""
        self._prefill = prefill
        self._cache = cache
        self._frame_step = frame_step
        device = cache.lengths.device
        self._prompt_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._readers = readers

    @torch.inference_mode()
    def prepare(
        self, streams: list[Stream], input_open: Callable[[Stream], bool]
    ) -> tuple[list[Stream], list[Refusal]]:
        """Build the prompts of streams sharing one text mode: those ready for their prefill, and those
        refused."""
        try:
            self._build(streams, input_open)
        except torch.OutOfMemoryError:
            release_cached_memory()
            return [], [Refusal(stream, EngineUnavailableError(OUT_OF_MEMORY)) for stream in streams]
        except Exception as error:
            if len(streams) > 1:  # find the request the package refused without failing its batch-mates
                ready: list[Stream] = []
                refused: list[Refusal] = []
                for stream in streams:
                    alone_ready, alone_refused = self.prepare([stream], input_open)
                    ready += alone_ready
                    refused += alone_refused
                return ready, refused
            logger.warning("prompt building failed: %s", error)
            refusal = error if isinstance(error, ValueError) else RuntimeError("prefill failed")
            return [], [Refusal(streams[0], refusal)]
        limit = self._cache.max_length - 1  # room for at least one frame
        ready, refused = [], []
        for stream in streams:
            length = prompt_length(stream)
            if length > limit:
                error = InvalidRequestError(_PROMPT_TOO_LONG.format(length, self._cache.max_length))
                refused.append(Refusal(stream, error))
            else:
                ready.append(stream)
        return ready, refused

    def _build(self, streams: list[Stream], input_open: Callable[[Stream], bool]) -> None:
        if self._prompt_stream is None:
            self._prefill.prepare(streams, input_open)
            return
        steps = torch.cuda.current_stream(self._prompt_stream.device)
        with torch.cuda.stream(self._prompt_stream):
            self._prefill.prepare(streams, input_open)
        hand_over(self._prefill.handed_out, self._prompt_stream, [steps, *self._readers])

    @torch.inference_mode()
    def join(self, streams: list[Stream]) -> tuple[list[Stream], list[Refusal]]:
        """Prefill prepared streams into free slots (``stream.slot`` set) and let them join the step; on a
        failure their slots are given back and every one of them is refused."""
        slots = [self._cache.allocate() for _ in streams]
        assert all(slot is not None for slot in slots), "admission gave out more slots than are free"
        try:
            hidden = self._prefill.run(streams, slots, self._cache)  # type: ignore[arg-type]
            rows = [
                JoinRow(slot=slot, sampling=s.sampling, seed=s.seed, text_open=not s.text_track.closed)  # type: ignore[union-attr,arg-type]
                for s, slot in zip(streams, slots, strict=True)
            ]
            self._frame_step.join(rows, hidden)
        except Exception as error:
            for slot in slots:
                self._frame_step.release(slot, scrub=True)  # type: ignore[arg-type]
            if isinstance(error, torch.OutOfMemoryError):
                release_cached_memory()
                failure: Exception = EngineUnavailableError(OUT_OF_MEMORY)
            else:
                logger.exception("prefill failed")
                failure = RuntimeError("prefill failed")
            return [], [Refusal(stream, failure) for stream in streams]
        for stream, slot in zip(streams, slots, strict=True):
            stream.slot = slot
        return streams, []


def release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
