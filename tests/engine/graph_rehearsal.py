"""CUDA graphs rehearsed on the CPU: the engine captures and replays its graphs as on a GPU, but each
"graph" re-runs the captured function eagerly. What a real graph replays is exactly that function on the
same static buffers, so the graph path (buckets, the graph-safe sampler with no host shortcuts, the static
buffers copied in and out) is tested here without a GPU. The "capture" runs under ``HostSyncGuard`` with
nothing allowed, as a real capture refuses every host synchronisation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from qwen3_tts_serving.engine import graphs
from qwen3_tts_serving.engine.host_sync import HostSyncGuard


class RehearsedGraph:
    """Stands in for a captured torch.cuda.CUDAGraph."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self._run = run
        self.replays = 0

    def replay(self) -> None:
        self._run()
        self.replays += 1


def rehearse_capture(run: Callable[[], Any], pool: Any = None) -> tuple[RehearsedGraph, Any]:
    for _ in range(2):  # the warm-up runs of the real capture
        run()
    with HostSyncGuard():
        output = run()
    return RehearsedGraph(run), output


@contextmanager
def rehearsed_graphs() -> Iterator[None]:
    """Within it, engines built on the CPU capture their graphs as rehearsals (and keep them after)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graphs, "can_capture", lambda device: True)
        patch.setattr(graphs, "new_pool", lambda: None)
        patch.setattr(graphs, "capture_graph", rehearse_capture)
        yield


# Small buckets: each capture runs the frame step three times per (batch, length) pair.
REHEARSAL_SETTINGS = {
    "cuda_graphs": "on",
    "cuda_graph_batch_sizes": "1,2,4",
    "attention_length_buckets": "64,128,256",
    "max_active_streams": 8,
    "slot_max_length": 512,
}

# Runs a test on both frame paths: ``make_engine`` eager, and with rehearsed graphs.
both_frame_paths = pytest.mark.parametrize("make_engine", ["eager", "graphs"], indirect=True)


def replays(graph_table: dict[Any, Any]) -> int:
    """Replays of a frame step's or decoder's rehearsed graphs, all buckets together."""
    return sum(graph.replays for graph in graph_table.values())
