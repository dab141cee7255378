"""Triton's server-side statistics (``get_inference_statistics``) around a measurement, as differences.

For the decoupled synthesis models ``compute_infer`` covers ``execute()`` only, which hands the entry
batch to the engine and returns: generation happens afterwards on the engine thread. Queue time is the
wait in the dynamic batcher; ``inference_count / execution_count`` is the mean entry batch size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_DURATIONS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def _int(value: Any) -> int:
    return int(value or 0)  # uint64 fields arrive as strings in the JSON form


def _duration(stats: Mapping[str, Any], name: str) -> tuple[int, int]:
    entry = stats.get("inference_stats", {}).get(name, {})
    return _int(entry.get("count")), _int(entry.get("ns"))


def _batches(stats: Mapping[str, Any]) -> dict[int, int]:
    """Executions per batch size."""
    return {
        _int(entry.get("batch_size")): _int(entry.get("compute_infer", {}).get("count"))
        for entry in stats.get("batch_stats", [])
    }


def model_entry(statistics: Mapping[str, Any], model: str) -> Mapping[str, Any]:
    """The statistics of ``model`` out of ``get_inference_statistics(as_json=True)``."""
    for entry in statistics.get("model_stats", []):
        if entry.get("name") == model:
            return entry
    return {}


def stats_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What happened between two snapshots of one model's statistics."""
    inferences = _int(after.get("inference_count")) - _int(before.get("inference_count"))
    executions = _int(after.get("execution_count")) - _int(before.get("execution_count"))
    delta: dict[str, Any] = {
        "inference_count": inferences,
        "execution_count": executions,
        "avg_batch_size": inferences / executions if executions > 0 else None,
    }
    for name in _DURATIONS:
        count_after, ns_after = _duration(after, name)
        count_before, ns_before = _duration(before, name)
        count, ns = count_after - count_before, ns_after - ns_before
        delta[f"{name}_ms_avg"] = ns / count / 1e6 if count > 0 else None
    old = _batches(before)
    sizes = {size: count - old.get(size, 0) for size, count in _batches(after).items()}
    delta["batch_sizes"] = {size: count for size, count in sorted(sizes.items()) if count > 0}
    return delta


async def snapshot(client: Any, model: str) -> Mapping[str, Any]:
    """One model's statistics from a ``tritonclient.grpc.aio`` client (empty when unavailable)."""
    statistics = await client.get_inference_statistics(model, as_json=True)
    return model_entry(statistics, model)
