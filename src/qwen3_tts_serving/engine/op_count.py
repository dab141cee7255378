"""How many device operations a piece of engine code issues from the host.

On a GPU every operation dispatched eagerly is at least one kernel launch the host pays for (the issue this
engine was built against measured ~2,500 of them per frame step), while a replayed CUDA graph is one launch
for all it holds and dispatches nothing. ``DeviceOpCounter`` counts what is dispatched, views aside (they
launch nothing), so a frame step's count is its host-issued work: a handful with the frame step and the
decoder in graphs, and the same number for 1 stream as for 64 when batching is real (one batched call for
all streams, not a loop over them). It runs on any device; the CPU tests and the benchmark use it both
ways. A rehearsed graph (tests) re-runs its function eagerly inside ``not_counted``, as a real replay
would dispatch nothing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

_local = threading.local()


@contextmanager
def not_counted() -> Iterator[None]:
    """What runs inside is left out of every ``DeviceOpCounter`` of this thread."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


class DeviceOpCounter(TorchDispatchMode):
    """``with DeviceOpCounter() as ops: ...``; then ``ops.total`` and ``ops.by_op`` (name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not func.is_view and not getattr(_local, "depth", 0):
            self.by_op[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))
