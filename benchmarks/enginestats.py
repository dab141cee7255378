"""The engine's own figures (``qwen3_tts_*`` on Triton's metrics endpoint) around a measurement; parsed by
:mod:`qwen3_tts_serving.engine_metrics`.

``frames / steps`` is the engine's mean running batch (streams stepped together per frame: what
continuous batching achieved, where Triton's ``avg_batch_size`` only counts requests that *entered*
together), and ``step_seconds / steps`` the mean time of one step.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from qwen3_tts_serving.engine_metrics import ACTIVE_STREAMS, parse

_COUNTERS = ("qwen3_tts_steps_total", "qwen3_tts_frames_total", "qwen3_tts_step_seconds_total")
_FIRST_AUDIO = "qwen3_tts_first_audio_seconds_count"
_ACTIVE = ACTIVE_STREAMS


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    steps, frames, seconds = (after.get(n, 0.0) - before.get(n, 0.0) for n in _COUNTERS)
    return {
        "steps": int(steps),
        "frames": int(frames),
        "running_batch_avg": frames / steps if steps > 0 else None,
        "step_ms_avg": seconds * 1000 / steps if steps > 0 else None,
        "first_audio_count": int(after.get(_FIRST_AUDIO, 0.0) - before.get(_FIRST_AUDIO, 0.0)),
    }


async def scrape(url: str, model: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        return parse((await client.get(url)).text, model)


async def settled(url: str, model: str, before: dict[str, float], timeout_s: float = 3.0) -> dict[str, float]:
    """The figures once the engine has gone idle and published (it does so twice a second and at idle)."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = await scrape(url, model)
        moved = after.get(_COUNTERS[0], 0.0) > before.get(_COUNTERS[0], 0.0)
        if (moved and after.get(_ACTIVE, 0.0) == 0) or time.monotonic() > deadline:
            return after
        await asyncio.sleep(0.1)
