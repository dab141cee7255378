"""The performance targets (issue 7 for the served stack, issue 15 for the engine in-process, on an H100
with 1.7B CustomVoice) and their evaluation.

A target is checked only on a GPU run of the full-size 1.7B model; on any other run it reads
"not yet measured on GPU", whatever the figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

NOT_MEASURED = "not yet measured on GPU"
NOT_RUN = "not measured (level not run)"
Metric = Literal["ttfa_s", "audio_s_per_s", "ms_per_step", "streams_with_underruns"]


@dataclass(frozen=True)
class Target:
    name: str
    source: Literal["issue", "ours"]
    concurrency: int | None  # None: the best level of the run (a batch size for ms_per_step)
    metric: Metric
    quantile: str | None  # "p50", "p95" for latency
    bound: float
    higher_is_better: bool = False
    up_to: bool = False  # every level up to ``concurrency`` (which must have run): the worst of them

    def value(self, levels: Mapping[int, Mapping[str, Any]]) -> float | None:
        if self.up_to and self.concurrency is not None:
            if self.concurrency not in levels:
                return None
            values = [self._read(summary) for level, summary in levels.items() if level <= self.concurrency]
            present = [v for v in values if v is not None]
            return (min if self.higher_is_better else max)(present) if present else None
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

    def status(self, value: float | None, on_gpu_full_model: bool, passed: str, failed: str) -> str:
        """NOT_MEASURED off a GPU run of the full model, NOT_RUN where the level has no value, else
        ``passed`` or ``failed`` (each report has its own words for them)."""
        if not on_gpu_full_model:
            return NOT_MEASURED
        if value is None:
            return NOT_RUN
        return passed if self.met(value) else failed


TARGETS = (
    Target("TTFA p50 <= 100 ms at concurrency 1", "issue", 1, "ttfa_s", "p50", 0.100),
    Target("TTFA p50 <= 250 ms at concurrency 32", "issue", 32, "ttfa_s", "p50", 0.250),
    Target("aggregate >= 40x real time at concurrency 32", "issue", 32, "audio_s_per_s", None, 40.0, True),
    Target("TTFA p50 <= 40 ms alone", "ours", 1, "ttfa_s", "p50", 0.040),
    Target("TTFA p95 <= 150 ms at concurrency 64", "ours", 64, "ttfa_s", "p95", 0.150),
    Target("aggregate >= 500 audio-s/s", "ours", None, "audio_s_per_s", None, 500.0, True),
)


# Issue 15 (the engine in-process, benchmarks.gpu_engine): per section of that run, "batches" (levels are
# batch sizes) and "load" (closed-loop concurrency).
NO_UNDERRUNS = Target(
    "no stream underruns at c <= 64", "issue", 64, "streams_with_underruns", None, 0, up_to=True
)
ENGINE_TARGETS: tuple[tuple[str, Target], ...] = (
    ("batches", Target("frame step <= 8 ms at batch 1", "issue", 1, "ms_per_step", None, 8.0)),
    ("batches", Target("frame step <= 12 ms at batch 64", "issue", 64, "ms_per_step", None, 12.0)),
    ("batches", Target("frame step <= 16 ms at batch 128", "issue", 128, "ms_per_step", None, 16.0)),
    ("load", Target("first audio p50 <= 25 ms at c=1", "issue", 1, "ttfa_s", "p50", 0.025)),
    ("load", Target("first audio p95 <= 80 ms at c=64", "issue", 64, "ttfa_s", "p95", 0.080)),
    ("load", Target(">= 400 audio-s/s at c=64", "issue", 64, "audio_s_per_s", None, 400.0, True)),
    ("load", Target(">= 600 audio-s/s at c=128", "issue", 128, "audio_s_per_s", None, 600.0, True)),
    ("load", NO_UNDERRUNS),
)


def evaluate_engine(
    sections: Mapping[str, Mapping[int, Mapping[str, Any]]], on_gpu_full_model: bool
) -> list[dict[str, Any]]:
    """Each engine target against its section's levels: ``{"target", "section", "value", "status"}`` with
    status PASS or FAIL on a GPU run of the full model."""
    rows = []
    for section, target in ENGINE_TARGETS:
        value = target.value(sections.get(section, {}))
        status = target.status(value, on_gpu_full_model, "PASS", "FAIL")
        rows.append({"target": target.name, "section": section, "value": value, "status": status})
    return rows


def evaluate(
    paths: Mapping[str, Mapping[int, Mapping[str, Any]]], on_gpu_full_model: bool
) -> list[dict[str, Any]]:
    """Each target against each load-tool path: ``{"target", "source", "path", "value", "status"}``."""
    rows = []
    for target in TARGETS:
        for path, levels in paths.items():
            value = target.value(levels)
            status = target.status(value, on_gpu_full_model, "met", "missed")
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
