"""Reading the engines' own figures (``qwen3_tts_*``) from Triton's Prometheus text, the one parser of them.

The engine models publish per model (label ``model``, e.g. ``custom_voice_engine_0``; one per checkpoint per
GPU, shared by that checkpoint's client-facing models): ``qwen3_tts_active_streams`` and
``qwen3_tts_queued_streams`` (gauges: what the gateway routes new streams by), counters of steps, frames and
step time, and ``qwen3_tts_finished_total{reason}`` (the benchmarks read those).
"""

from __future__ import annotations

import re

from .contract import MODEL_CHECKPOINTS

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
    """The ``qwen3_tts_*`` samples of the engines behind ``model`` (see :func:`parse_all`): an engine model's
    own, or for a client-facing model the sum over every engine of its checkpoint (which the checkpoint's
    other models share: ``custom_voice`` and ``custom_voice_session`` read the same figures)."""
    models = parse_all(text)
    if model in models:
        return models[model]
    checkpoint = MODEL_CHECKPOINTS.get(model)
    if checkpoint is None:
        return {}
    engine = re.compile(rf"{checkpoint}_engine_\d+")
    summed: dict[str, float] = {}
    for name, samples in models.items():
        if engine.fullmatch(name):
            for key, value in samples.items():
                summed[key] = summed.get(key, 0.0) + value
    return summed


def streams(text: str) -> float:
    """Streams the server's engines hold or queue, over every model: a server's load."""
    return sum(
        samples.get(ACTIVE_STREAMS, 0.0) + samples.get(QUEUED_STREAMS, 0.0)
        for samples in parse_all(text).values()
    )
