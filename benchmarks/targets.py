"""The performance targets (issue 7, on an H100 with 1.7B CustomVoice) and their evaluation.

A target is checked only on a GPU run of the full-size 1.7B model; on any other run it reads
"not yet measured on GPU", whatever the figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

NOT_MEASURED = "not yet measured on GPU"


@dataclass(frozen=True)
class Target:
    name: str
    source: Literal["issue", "ours"]
    concurrency: int | None  # None: the best level of the run
    metric: Literal["ttfa_s", "audio_s_per_s"]
    quantile: str | None  # "p50", "p95" for latency
    bound: float
    higher_is_better: bool = False

    def value(self, levels: Mapping[int, Mapping[str, Any]]) -> float | None:
        if self.concurrency is None:
            values = [self._read(summary) for summary in levels.values()]
            present = [v for v in values if v is not None]
            return (max if self.higher_is_better else min)(present) if present else None
        summary = levels.get(self.concurrency)
        return self._read(summary) if summary is not None else None

    def _read(self, summary: Mapping[str, Any]) -> float | None:
        value = summary.get(self.metric)
        if self.quantile is not None:
            value = value.get(self.quantile) if isinstance(value, Mapping) else None
        return value if isinstance(value, int | float) else None

    def met(self, value: float) -> bool:
        return value >= self.bound if self.higher_is_better else value <= self.bound


TARGETS = (
    Target("TTFA p50 <= 100 ms at concurrency 1", "issue", 1, "ttfa_s", "p50", 0.100),
    Target("TTFA p50 <= 250 ms at concurrency 32", "issue", 32, "ttfa_s", "p50", 0.250),
    Target("aggregate >= 40x real time at concurrency 32", "issue", 32, "audio_s_per_s", None, 40.0, True),
    Target("TTFA p50 <= 40 ms alone", "ours", 1, "ttfa_s", "p50", 0.040),
    Target("TTFA p95 <= 150 ms at concurrency 64", "ours", 64, "ttfa_s", "p95", 0.150),
    Target("aggregate >= 500 audio-s/s", "ours", None, "audio_s_per_s", None, 500.0, True),
)


def evaluate(
    paths: Mapping[str, Mapping[int, Mapping[str, Any]]], on_gpu_full_model: bool
) -> list[dict[str, Any]]:
    """Each target against each load-tool path: ``{"target", "source", "path", "value", "status"}``."""
    rows = []
    for target in TARGETS:
        for path, levels in paths.items():
            value = target.value(levels)
            if not on_gpu_full_model:
                status = NOT_MEASURED
            elif value is None:
                status = "not measured (level not run)"
            else:
                status = "met" if target.met(value) else "missed"
            rows.append(
                {
                    "target": target.name,
                    "source": target.source,
                    "path": path,
                    "value": value,
                    "status": status,
                }
            )
    return rows
