"""What one steady-state frame step runs on the device and asks of the CUDA runtime, from ``torch.profiler``.

The GPU benchmark's ``kernels`` section: a few steps of a running batch under the profiler, reduced to what
tells the next change where to go when a target is missed:

- the kernels that take the device's time (self time per step, calls per step), and the device's busy time
  per step against the step's wall time: a step far longer than its busy time is host-bound;
- the CUDA runtime calls per step: ``cudaGraphLaunch`` (one per graph replayed), ``cudaLaunchKernel``
  (kernels launched outside the graphs), copies and synchronisations;
- the host operations with the most CPU time (on a CPU this is all there is).

The Chrome trace of those steps is written beside the results, gzipped, for a closer look.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

TOP_ROWS = 20
# The CUDA runtime calls whose counts per step are reported (each a host call the step makes).
RUNTIME_CALLS = (
    "cudaGraphLaunch",
    "cudaLaunchKernel",
    "cudaLaunchKernelExC",
    "cudaMemcpyAsync",
    "cudaMemsetAsync",
    "cudaStreamSynchronize",
    "cudaEventSynchronize",
    "cudaDeviceSynchronize",
    "cudaStreamWaitEvent",
    "cudaEventRecord",
)


def _self_device_us(event: Any) -> float:
    return float(getattr(event, "self_device_time_total", 0.0) or 0.0)


def _is_device_event(event: Any) -> bool:
    return str(getattr(event, "device_type", "")).endswith("CUDA")


def _row(event: Any, steps: int) -> dict[str, Any]:
    return {
        "name": event.key,
        "calls_per_step": event.count / steps,
        "device_ms_per_step": _self_device_us(event) / 1000 / steps,
        "cpu_ms_per_step": event.self_cpu_time_total / 1000 / steps,
    }


def summarise(averages: Sequence[Any], steps: int, wall_s: float, top: int = TOP_ROWS) -> dict[str, Any]:
    """The figures above from ``profile.key_averages()`` over ``steps`` steps that took ``wall_s``."""
    kernels = [event for event in averages if _is_device_event(event)]
    host_ops = [event for event in averages if not _is_device_event(event)]
    kernels.sort(key=_self_device_us, reverse=True)
    host_ops.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    calls = {event.key: event.count for event in host_ops}
    return {
        "steps": steps,
        "wall_ms_per_step": wall_s * 1000 / steps,
        "device_busy_ms_per_step": sum(_self_device_us(e) for e in kernels) / 1000 / steps,
        "kernels_per_step": sum(e.count for e in kernels) / steps,
        "runtime_calls_per_step": {name: calls.get(name, 0) / steps for name in RUNTIME_CALLS},
        "top_kernels": [_row(event, steps) for event in kernels[:top]],
        "top_host_ops": [_row(event, steps) for event in host_ops[:top]],
    }


def profile_steps(
    step: Callable[[], None],
    steps: int,
    *,
    on_gpu: bool,
    synchronize: Callable[[], None],
    trace_path: Path | None = None,
) -> dict[str, Any]:
    """Run ``steps`` calls of ``step`` under ``torch.profiler`` (the device synchronised at both ends)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    synchronize()
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        wall_s = time.perf_counter() - started
    result = summarise(profiler.key_averages(), steps, wall_s)
    if trace_path is not None:
        with tempfile.TemporaryDirectory() as folder:
            raw = Path(folder) / "trace.json"
            profiler.export_chrome_trace(str(raw))
            with raw.open("rb") as source, gzip.open(trace_path, "wb") as target:
                shutil.copyfileobj(source, target)
        result["trace"] = trace_path.name
    return result


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def kernels_lines(section: Mapping[str, Any]) -> list[str]:
    """The section as Markdown."""
    if "steps" not in section:
        return []
    device = (
        f", device busy {_f(section['device_busy_ms_per_step'])} ms, "
        f"{_f(section['kernels_per_step'], 0)} kernels per step"
        if section["kernels_per_step"]
        else " (no device activity recorded: a CPU run)"
    )
    lines = [
        f"B={section.get('batch')}, {section['steps']} steady-state steps under torch.profiler: "
        f"{_f(section['wall_ms_per_step'])} ms per step (profiled){device}."
    ]
    runtime = {name: count for name, count in section["runtime_calls_per_step"].items() if count}
    if runtime:
        counts = ", ".join(f"{name} {_f(n, 1)}" for name, n in runtime.items())
        lines.append(f"CUDA runtime calls per step: {counts}.")
    for title, rows, unit in (
        ("kernel", section["top_kernels"], "device_ms_per_step"),
        ("host operation", section["top_host_ops"], "cpu_ms_per_step"),
    ):
        if not rows:
            continue
        lines += ["", f"| {title} | calls per step | self ms per step |", "|---|---|---|"]
        lines += [
            f"| `{row['name'][:90]}` | {_f(row['calls_per_step'], 1)} | {_f(row[unit], 3)} |" for row in rows
        ]
    if section.get("trace"):
        lines += ["", f"Chrome trace: `{section['trace']}` (gzipped, beside results.json)."]
    return lines
