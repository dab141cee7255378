"""What the figures were measured on: machine, GPUs (nvidia-smi), package versions, the commit."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from qwen3_tts_serving.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

PACKAGES = (
    "torch",
    "transformers",
    "qwen-tts",
    "nvidia-pytriton",
    "tritonclient",
    "fastapi",
    "uvicorn",
    "httpx",
    "numpy",
    "flash-attn",
)
_GPU_QUERY = "name,memory.total,driver_version,compute_cap,clocks.max.sm,power.limit"


def _run(command: list[str], timeout_s: float = 15.0) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


def gpus() -> list[dict[str, str]]:
    """One entry per GPU from ``nvidia-smi --query-gpu`` (empty without a GPU)."""
    output = _run(["nvidia-smi", f"--query-gpu={_GPU_QUERY}", "--format=csv,noheader"])
    if not output:
        return []
    keys = _GPU_QUERY.split(",")
    return [
        dict(zip(keys, (v.strip() for v in line.split(",")), strict=False)) for line in output.splitlines()
    ]


def machine() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": _memory_gib(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpus": gpus(),
        "nvidia_smi": _run(["nvidia-smi"]),
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def commit() -> str | None:
    """The checked-out commit (read-only git), with ``+dirty`` when the work tree has changes."""
    head = _run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"])
    if head is None:
        return None
    dirty = _run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"])
    return f"{head}+dirty" if dirty else head
