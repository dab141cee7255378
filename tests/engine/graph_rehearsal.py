"""CUDA graphs rehearsed on the CPU: the engine captures and replays its graphs as on a GPU, but each
"graph" re-runs the captured function eagerly. What a real graph replays is exactly that function on the
same static buffers, so the graph path (buckets, the graph-safe sampler with no host shortcuts, the static
buffers copied in and out) is tested here without a GPU. The "capture" runs under ``HostSyncGuard`` with
nothing allowed, as a real capture refuses every host synchronisation. And every replay must touch the
very tensors the capture touched: a real graph reads and writes the memory it was captured with, so a
tensor rebound outside it (``state.x = new``) would go unseen on a GPU while an eager re-run would follow
it; the rehearsal fails that instead. And what a replay made and is still held afterwards is overwritten
with garbage, as a real graph's next replay overwrites its own memory: only what the captured function
wrote into buffers from outside it may be read after a replay."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from qwen3_tts_serving.engine import graphs
from qwen3_tts_serving.engine.host_sync import HostSyncGuard
from qwen3_tts_serving.engine.op_count import not_counted


class _OutsideTensors(TorchDispatchMode):
    """The storages of the tensors a run touches that it did not make itself (weights, state, buffers),
    each with the shape and dtype it was first seen with."""

    def __init__(self) -> None:
        super().__init__()
        self.outside: dict[int, str] = {}
        self._made: set[int] = set()
        self.made: list[weakref.ref[torch.Tensor]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        # A tensor made from a host value right there (``x[:, -1] = False``) is a constant of the graph.
        made_here = func is torch.ops.aten.lift_fresh.default
        for tensor in () if made_here else _tensors((args, kwargs)):
            storage = tensor.untyped_storage().data_ptr()
            if storage not in self._made and storage not in self.outside:
                self.outside[storage] = f"{tuple(tensor.shape)} {tensor.dtype} (in {func})"
        out = func(*args, **kwargs)
        for tensor in _tensors(out):
            storage = tensor.untyped_storage().data_ptr()
            if storage not in self.outside:
                self._made.add(storage)
                self.made.append(weakref.ref(tensor))
        return out


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor) and leaf.numel()]


# What a made tensor still alive after a replay is overwritten with (floats: NaN).
_GARBAGE: dict[torch.dtype, Any] = {torch.bool: True, torch.long: -7, torch.int: -7}


def _touched(run: Callable[[], Any], *, scribble: bool = False) -> tuple[dict[int, str], Any]:
    """What ``run`` touched outside itself, and what it returned. ``scribble``: what it made and is still
    alive afterwards is overwritten with garbage, as the next replay of a real graph overwrites its own
    memory: whoever reads a graph's insides after it ran reads garbage here too."""
    with _OutsideTensors() as trace:
        output = run()
    if scribble:
        with torch.inference_mode():
            for ref in trace.made:
                tensor = ref()
                if tensor is not None:
                    tensor.fill_(_GARBAGE.get(tensor.dtype, float("nan")))
    return trace.outside, output


class RehearsedGraph:
    """Stands in for a captured torch.cuda.CUDAGraph."""

    def __init__(self, run: Callable[[], Any], captured: dict[int, str]) -> None:
        self._run = run
        self._captured = captured
        self.replays = 0

    def replay(self) -> None:
        with not_counted():  # a real replay dispatches nothing
            touched, _ = _touched(self._run, scribble=True)
        new = [touched[storage] for storage in touched.keys() - self._captured.keys()]
        gone = [self._captured[storage] for storage in self._captured.keys() - touched.keys()]
        # A real graph would still use what it was captured with: a tensor rebound outside it goes unseen.
        assert not new and not gone, f"the replay touched tensors the capture did not: {new}; left: {gone}"
        self.replays += 1


def rehearse_capture(run: Callable[[], Any], family: Any = None) -> tuple[RehearsedGraph, Any]:
    for _ in range(2):  # the warm-up runs of the real capture
        run()
    with HostSyncGuard():
        captured, output = _touched(run)
    return RehearsedGraph(run, captured), output


@contextmanager
def rehearsed_graphs() -> Iterator[None]:
    """Within it, engines built on the CPU capture their graphs as rehearsals (and keep them after)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graphs, "can_capture", lambda device: True)
        patch.setattr(graphs, "new_family", lambda device: None)
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
