"""CUDA graph capture as the engine does it everywhere: warm up on a side stream, then capture.

The engine and its parts reach capture only through this module (``graphs.can_capture``,
``graphs.new_pool``, ``graphs.capture_graph``): the CPU tests put a rehearsal in their place that runs the
same captured functions eagerly, so the graph path is tested on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def can_capture(device: torch.device) -> bool:
    return device.type == "cuda"


def new_pool() -> Any:
    """A memory pool that graphs which never run at once can share."""
    return torch.cuda.graph_pool_handle()


def capture_graph(run: Callable[[], Any], pool: Any = None) -> tuple[torch.cuda.CUDAGraph, Any]:
    """``run`` captured into a graph (and what the captured call returned: its output buffers). Two eager
    runs on a side stream first, so lazy allocations and kernel selection stay out of the graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: CUDA work of other threads (another engine in the process) does not void the capture.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        output = run()
    return graph, output
