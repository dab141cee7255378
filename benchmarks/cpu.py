"""CPU seconds used by a process and its descendants (Linux ``/proc``), to measure per level.

Wall-clock throughput on a shared machine moves with whatever else runs there; the CPU time the server
processes themselves consumed per second of audio does not (as much), so each level records both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_PROC = Path("/proc")


def _read_stat(pid: int, proc: Path = _PROC) -> tuple[int, int] | None:
    """(parent pid, user + system clock ticks) of ``pid``, or None when it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (2nd field) is in parentheses and may contain spaces: split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    found, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, parent in parents.items() if parent == current and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def tree_cpu_seconds(root: int | None, proc: Path = _PROC) -> float | None:
    """User + system CPU seconds of ``root`` and every live descendant; None when unavailable."""
    if root is None or not proc.is_dir():
        return None
    stats: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (stat := _read_stat(int(entry.name), proc)) is not None:
            stats[int(entry.name)] = stat
    if root not in stats:
        return None
    parents = {pid: parent for pid, (parent, _) in stats.items()}
    ticks = sum(stats[pid][1] for pid in _descendants(root, parents))
    return ticks / os.sysconf("SC_CLK_TCK")


def snapshot(pids: Mapping[str, int | None]) -> dict[str, float | None]:
    return {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def delta(before: Mapping[str, float | None], after: Mapping[str, float | None]) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for name, end in after.items():
        start = before.get(name)
        result[name] = None if start is None or end is None else end - start
    return result
