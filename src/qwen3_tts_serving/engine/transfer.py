"""Host/device copies that never block the host on the whole device (nothing for sync debug mode to flag).

A blocking copy waits for every kernel queued before it and, on a GPU, for the copy itself through the
driver's synchronous path; the engine's step runs under ``torch.cuda.set_sync_debug_mode("error")`` in the
GPU benchmark. Uploads go non-blocking (from pageable memory the driver stages the data before returning,
so the source may be dropped at once); downloads land in pinned memory and the host waits on an event
recorded right after them, i.e. for exactly the work that produced the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_device(values: list[Any], like: torch.Tensor) -> torch.Tensor:
    """A host list as a tensor of ``like``'s dtype on ``like``'s device."""
    return torch.tensor(values, dtype=like.dtype).to(like.device, non_blocking=True)


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """``tensor`` as a numpy array of its own (waits only for the work that produced it)."""
    if tensor.device.type != "cuda":
        return tensor.numpy(force=True).copy()
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()
    return pinned.numpy().copy()  # the pinned block goes back to torch's host cache
