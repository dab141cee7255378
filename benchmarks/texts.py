"""Real texts to synthesize (public-domain opening lines and everyday sentences), and the request jobs.

Lengths matter: the random-weight checkpoints say end-of-speech after about 1.25 codec frames per text
token (``qwen3_tts_serving.checkpoints``), so the same texts give the same generation lengths run after
run, and ``max_new_tokens`` caps them in case a checkpoint does not stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Short sentences: one to two seconds of audio on the tiny CPU checkpoints.
SHORT_TEXTS = (
    "Good morning, how can I help you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Please hold while I transfer your call.",
    "Your order has shipped and will arrive on Friday.",
    "Turn left at the next intersection.",
    "It is going to rain later this afternoon.",
    "Thanks for waiting, I have the answer now.",
    "The meeting was moved to three o'clock.",
)

# Paragraph-length texts for the GPU runs (several seconds of audio each).
LONG_TEXTS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, "
    "and nothing particular to interest me on shore, I thought I would sail about a little.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife, however little known the feelings or views of such a man may be.",
    "Happy families are all alike; every unhappy family is unhappy in its own way. Everything was in "
    "confusion in the house, and the wife had discovered an affair with the French governess.",
    "In a hole in the ground there lived a creature. Not a nasty, dirty, wet hole, filled with the ends of "
    "worms and an oozy smell, but a comfortable one, with plenty of room for everyone.",
    "All this happened, more or less. The war parts, anyway, are pretty much true, and the rest was made up "
    "from notes and memories that had been kept for many, many years in a drawer.",
)

REFERENCE_TRANSCRIPT = "This is a short reference recording for the cloned voice."
DESIGN_INSTRUCT = "A calm, warm female voice speaking at a steady pace."


@dataclass(frozen=True)
class Job:
    """One synthesis request: the same fields go to the gateway (JSON) and to Triton (tensors)."""

    text: str
    speaker: str = "ryan"
    language: str = "english"
    max_new_tokens: int = 40
    seed: int = 0

    def gateway_body(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "speaker": self.speaker,
            "language": self.language,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }

    def triton_fields(self) -> dict[str, Any]:
        """Triton's inputs by name: the same fields as the gateway's body."""
        return self.gateway_body()


def jobs(texts: tuple[str, ...], count: int, *, max_new_tokens: int, seed: int = 0) -> list[Job]:
    """``count`` jobs cycling through ``texts``; job ``i`` gets seed ``seed + i`` (reproducible sampling)."""
    return [
        Job(text=texts[i % len(texts)], max_new_tokens=max_new_tokens, seed=seed + i) for i in range(count)
    ]


def reference_clip(seconds: float = 3.5, sample_rate: int = 24000) -> np.ndarray:
    """A voiced-sounding reference clip (a 180 Hz tone with a syllable-rate envelope): no audio files ship
    with the project, and the random-weight speaker encoder does not care what it hears."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 1.5 * t)).astype(np.float32)


def requests_per_level(concurrency: int, requests: int | None, rounds: int, minimum: int = 2) -> int:
    """``requests`` when given, else ``rounds`` waves of ``concurrency`` requests (at least ``minimum``)."""
    if requests is not None:
        return requests
    return max(minimum, rounds * concurrency)
