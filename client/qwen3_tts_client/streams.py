"""Iterators over a synthesis stream, closable early (closing cancels the request on the server)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable
from types import TracebackType

import numpy as np

from .types import AudioChunk

__all__ = ["AsyncChunkStream", "ChunkStream", "join_chunks"]


def join_chunks(chunks: Iterable[AudioChunk]) -> tuple[np.ndarray, int, str | None]:
    """(all samples, sample rate, finish reason) of the chunks, in order."""
    parts, sample_rate, reason = [], 0, None
    for chunk in chunks:
        parts.append(chunk.audio)
        sample_rate = chunk.sample_rate or sample_rate
        reason = chunk.finish_reason or reason
    audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)
    return audio, sample_rate, reason


class ChunkStream:
    """``for chunk in client.stream(...)``; use ``with`` (or ``close()``) to stop early.

    The request is sent when iteration starts, so errors (422, 503, ...) surface from the first
    ``next()`` — after the retries, and before any audio.
    """

    def __init__(self, chunks: Generator[AudioChunk, None, None]) -> None:
        self._chunks = chunks

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> AudioChunk:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def collect(self) -> tuple[np.ndarray, int, str | None]:
        """Read the rest of the stream: (samples, sample rate, finish reason)."""
        with self:
            return join_chunks(self)


class AsyncChunkStream:
    """``async for chunk in client.stream(...)``; use ``async with`` (or ``aclose()``) to stop early."""

    def __init__(self, chunks: AsyncGenerator[AudioChunk, None]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncChunkStream:
        return self

    async def __anext__(self) -> AudioChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def collect(self) -> tuple[np.ndarray, int, str | None]:
        async with self:
            return join_chunks([chunk async for chunk in self])
