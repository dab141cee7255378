"""Reading the engines' own figures (``qwen3_tts_*``) from Triton's Prometheus text, the one parser of them.

The engines publish per model (label ``model``): ``qwen3_tts_active_streams`` and
``qwen3_tts_queued_streams`` (gauges: what the gateway routes new streams by), counters of steps, frames and
step time, and ``qwen3_tts_finished_total{reason}`` (the benchmarks read those).
"""

from __future__ import annotations

ACTIVE_STREAMS = "qwen3_tts_active_streams"
QUEUED_STREAMS = "qwen3_tts_queued_streams"
_PREFIX = "qwen3_tts_"


def parse_all(text: str) -> dict[str, dict[str, float]]:
    """``{model: {sample: value}}`` for every ``qwen3_tts_*`` sample; a sample is keyed by its name and its
    labels other than ``model``: ``qwen3_tts_frames_total``, ``qwen3_tts_finished_total{reason="stop"}``."""
    models: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith(_PREFIX):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        parts = [part for part in labels.rstrip("}").split(",") if part]
        model = next((part[len('model="') : -1] for part in parts if part.startswith('model="')), None)
        if model is None:
            continue
        others = ",".join(part for part in parts if not part.startswith('model="'))
        try:
            models.setdefault(model, {})[f"{name}{{{others}}}" if others else name] = float(value)
        except ValueError:
            continue  # not a sample line
    return models


def parse(text: str, model: str) -> dict[str, float]:
    """The ``qwen3_tts_*`` samples of one model (see :func:`parse_all`)."""
    return parse_all(text).get(model, {})


def streams(text: str) -> float:
    """Streams the server's engines hold or queue, over every model: a server's load."""
    return sum(
        samples.get(ACTIVE_STREAMS, 0.0) + samples.get(QUEUED_STREAMS, 0.0)
        for samples in parse_all(text).values()
    )
