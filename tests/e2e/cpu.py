"""CPU time of a process tree, read from /proc (Linux): how the tests see whether the engine is working."""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.extend(int(child) for child in task.read_text().split())
        except OSError:
            continue
    return children


def _own_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def tree_cpu_seconds(pid: int) -> float:
    """User + system seconds of ``pid`` and its descendants (the Python backend stubs)."""
    total, pending, seen = 0.0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _own_cpu_seconds(current)
        pending.extend(_children(current))
    return total


def cpu_seconds_during(pid: int | None, seconds: float) -> float:
    """CPU seconds the tree used over the next ``seconds`` of wall time."""
    assert pid is not None, "the server is not running"
    before = tree_cpu_seconds(pid)
    time.sleep(seconds)
    return tree_cpu_seconds(pid) - before
