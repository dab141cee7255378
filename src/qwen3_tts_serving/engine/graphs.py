"""CUDA graph capture as the engine does it everywhere: warm up on a side stream, then capture.

The engine and its parts reach capture only through this module (``graphs.can_capture``,
``graphs.new_family``, ``graphs.capture_graph``): the CPU tests put a rehearsal in their place that runs the
same captured functions eagerly, so the graph path is tested on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


def can_capture(device: torch.device) -> bool:
    return device.type == "cuda"


@dataclass(frozen=True)
class GraphFamily:
    """Graphs that never run at once (one frame step's, one decoder's): one memory pool and one capture
    stream. The stream matters as much as the pool. cuBLAS keeps a workspace per (handle, stream) and a
    graph bakes in the one of the stream it was captured on, so two families captured on one stream (torch's
    default capture stream, shared by the whole process) and replayed side by side, the frame step on the
    engine's stream and the decoder on its own, would share one workspace and corrupt each other's sums."""

    pool: Any
    stream: Any


def new_family(device: torch.device) -> GraphFamily:
    # A stream of ``device``: one made on another GPU (the current one) would capture none of this one's work.
    return GraphFamily(torch.cuda.graph_pool_handle(), torch.cuda.Stream(device))


def capture_graph(run: Callable[[], Any], family: GraphFamily) -> tuple[torch.cuda.CUDAGraph, Any]:
    """``run`` captured into a graph of ``family`` (and what the captured call returned: its output
    buffers). Two eager runs on the family's stream first, so lazy allocations (that stream's cuBLAS
    workspace among them) and kernel selection stay out of the graph."""
    stream = family.stream
    caller = torch.cuda.current_stream(stream.device)
    stream.wait_stream(caller)
    try:
        # torch.cuda.graph does not give the caller its stream back when the capture fails (capture_end
        # raises first); this block does, so an eager fallback does not run on the capture stream.
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA work of other threads (another engine in the process) does not void it.
            with torch.cuda.graph(graph, pool=family.pool, stream=stream, capture_error_mode="thread_local"):
                output = run()
    finally:
        caller.wait_stream(stream)
    return graph, output
