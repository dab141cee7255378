"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``: every operation that would make the host
wait for a GPU (or that a CUDA graph could not hold) fails where it is called, on any device.

On a GPU such an operation stalls the host until the device has caught up, and inside a CUDA graph capture
it breaks the capture. On a CPU everything is synchronous, so nothing notices it there; this guard does,
so that the tests and the CPU benchmark hold the engine's step to the GPU's rules on a machine without one.
It flags:

- reading a tensor's values on the host: ``item``, ``tolist``, ``numpy``, ``cpu``, ``bool`` / ``int`` /
  ``float`` / ``repr`` / ``format`` of a tensor (and ``aten::_local_scalar_dense``, what they come down
  to). ``.to(device)`` is not flagged: on a CPU it cannot tell the engine's device from the host;
- operations whose output size depends on tensor values: ``nonzero``, ``masked_select``, ``unique``,
  ``repeat_interleave`` without ``output_size``, ``equal``, and indexing with a boolean mask;
- a non-empty tensor made from host data (``torch.tensor([...])``): on a GPU an upload that a CUDA graph
  would not repeat. A 0-dim one (``x[:, -1] = False``) is a scalar argument, an empty one copies nothing.

Designed reads (the frame report's one copy, the decoder's audio, the uploads of ``transfer``) are named
in ``allowed`` by qualified function name; what happens inside them is counted in ``reads``, not flagged.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# Ops whose kernels wait for the device (their output size or value comes from the data).
_SYNCING_OPS = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::masked_select",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::equal",
        "aten::is_nonzero",
    }
)
_BOOLEAN_INDEXING_OPS = frozenset(
    {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}
)
_HOST_READS = frozenset(
    {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"}
    | {"__repr__", "__format__"}
)

# The engine's own designed host reads and uploads (see transfer and FrameStep.collect).
ENGINE_READS = (
    "qwen3_tts_serving.engine.transfer.to_host",
    "qwen3_tts_serving.engine.transfer.to_device",
    "qwen3_tts_serving.engine.frame_step.FrameStep.collect",
)


class HostSyncError(RuntimeError):
    """An operation that would wait for the GPU (a RuntimeError, as a failed CUDA graph capture is)."""


class HostSyncGuard:
    """``with HostSyncGuard(allowed=...) as guard:`` fails the first flagged operation outside ``allowed``
    with HostSyncError naming it and the innermost call outside torch; ``guard.reads`` counts the flagged
    operations made inside each allowed function."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(allowed)
        self.reads: Counter[str] = Counter()
        self._modes = (_FunctionMode(self), _DispatchMode(self))

    def __enter__(self) -> HostSyncGuard:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    def flag(self, what: str) -> None:
        frame, innermost = sys._getframe(1), None
        while frame is not None:
            name = f"{frame.f_globals.get('__name__', '')}.{frame.f_code.co_qualname}"
            if name in self.allowed:
                self.reads[name] += 1
                return
            if innermost is None and not is_tooling_file(frame.f_code.co_filename):
                innermost = f"{frame.f_code.co_filename}:{frame.f_lineno} ({frame.f_code.co_qualname})"
            frame = frame.f_back
        raise HostSyncError(f"{what}, at {innermost or 'an unknown place'}")


def is_tooling_file(filename: str) -> bool:
    """Torch's own code or this guard's: a report names the innermost caller outside them."""
    return filename == __file__ or f"{os.sep}torch{os.sep}" in filename


class _FunctionMode(TorchFunctionMode):
    def __init__(self, guard: HostSyncGuard) -> None:
        super().__init__()
        self._guard = guard

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in _HOST_READS:
            self._guard.flag(f"{name} reads a tensor on the host (waits for the GPU)")
        return func(*args, **(kwargs or {}))


class _DispatchMode(TorchDispatchMode):
    def __init__(self, guard: HostSyncGuard) -> None:
        super().__init__()
        self._guard = guard

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = func._schema.name
        if name in _SYNCING_OPS:
            self._guard.flag(f"{name} waits for the GPU")
        elif name == "aten::repeat_interleave" and kwargs.get("output_size") is None:
            self._guard.flag(f"{name} without output_size waits for the GPU")
        elif name in _BOOLEAN_INDEXING_OPS and _has_mask(args[1] if len(args) > 1 else ()):
            self._guard.flag(f"{name} with a boolean mask waits for the GPU (its size comes from the data)")
        elif name == "aten::lift_fresh" and args[0].dim() > 0 and args[0].numel() > 0:
            self._guard.flag("a tensor made from host data (an upload a CUDA graph would not repeat)")
        return func(*args, **kwargs)


def _has_mask(indices: Any) -> bool:
    masks = (torch.bool, torch.uint8)
    return any(isinstance(index, torch.Tensor) and index.dtype in masks for index in indices or ())
