"""Long text on the non-session endpoints: split at sentence boundaries, synthesized in order, pipelined.

The text is cut with the client's splitter (:func:`qwen3_tts_client.text.chunk_text`: Latin and CJK sentence
ends, never inside a number or after an abbreviation), sentences packed into segments of at most
``max_chars``. Every segment is its own Triton request with the same voice, language and sampling; the
next one is sent as soon as the current one has produced its first chunk, and read into a queue from a
task of its own, so its audio is ready when the current one ends and the stream has no gap. Chunks are
renumbered so that ``sequence`` runs on across segments and only the very last chunk has ``is_last``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from qwen3_tts_client.text import chunk_text

from .backend import AudioChunk, SynthesisRequest

logger = logging.getLogger(__name__)

SEGMENT_MAX_CHARS = 400  # the client's DEFAULT_MAX_CHARS: long enough for prosody, short for the first audio
_GUARD_RAILS = ("length", "repetition")

OpenStream = Callable[[SynthesisRequest], AsyncIterator[AudioChunk]]


def split_segments(text: str, max_chars: int = SEGMENT_MAX_CHARS) -> list[str]:
    """The segments of ``text`` (one when it fits); never empty."""
    if len(text) <= max_chars:
        return [text]
    return chunk_text(text, max_chars) or [text]


def segment_requests(request: SynthesisRequest, segments: list[str]) -> list[SynthesisRequest]:
    return [replace(request, text=segment) for segment in segments]


def overall_finish_reason(reasons: list[str]) -> str:
    """A guard rail that fired in any segment (length, repetition) wins; else the last segment's."""
    for reason in reasons:
        if reason in _GUARD_RAILS:
            return reason
    return reasons[-1] if reasons else "stop"


async def _aclose(source: AsyncIterator[AudioChunk]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()


class _Prefetch:
    """Reads one engine stream into a queue from a task of its own, so it runs ahead of its consumer."""

    def __init__(self, source: AsyncIterator[AudioChunk]) -> None:
        self._queue: asyncio.Queue[AudioChunk | Exception | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._read(source))

    async def _read(self, source: AsyncIterator[AudioChunk]) -> None:
        try:
            async for chunk in source:
                self._queue.put_nowait(chunk)
            self._queue.put_nowait(None)
        except Exception as exc:  # handed to the consumer, which raises it in order
            self._queue.put_nowait(exc)
        finally:
            await _aclose(source)

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        while (item := await self._queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    async def aclose(self) -> None:
        """Stop reading; an unfinished engine stream is closed, which cancels its Triton request."""
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def pipelined_chunks(
    open_stream: OpenStream, requests: list[SynthesisRequest]
) -> AsyncIterator[AudioChunk]:
    """The chunks of ``requests`` in order as one stream (see the module docstring)."""
    readers: list[_Prefetch] = []
    reasons: list[str] = []
    sequence = 0
    try:
        for index, request in enumerate(requests):
            if len(readers) == index:  # not opened early (the first, or its predecessor sent no chunk)
                readers.append(_Prefetch(open_stream(request)))
            final_segment = index == len(requests) - 1
            async for chunk in readers[index].chunks():
                if len(readers) == index + 1 and not final_segment:
                    readers.append(_Prefetch(open_stream(requests[index + 1])))
                if chunk.is_last:
                    reasons.append(chunk.finish_reason or "stop")
                    logger.debug("segment %d/%d finished: %s", index + 1, len(requests), reasons[-1])
                    if not final_segment and len(chunk.audio) == 0:
                        continue
                last = chunk.is_last and final_segment
                reason = overall_finish_reason(reasons) if last else ""
                yield AudioChunk(chunk.audio, chunk.sample_rate, sequence, last, reason)
                sequence += 1
    finally:
        for reader in readers:
            await reader.aclose()
