"""Host/device copies that never block the host on the whole device (nothing for sync debug mode to flag).

A blocking copy waits for every kernel queued before it and, on a GPU, for the copy itself through the
driver's synchronous path; the engine's step runs under ``torch.cuda.set_sync_debug_mode("error")`` in the
GPU benchmark. Uploads go non-blocking from pinned memory; downloads land in pinned memory and the host
waits on an event recorded right after them, i.e. for exactly the work that produced the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch


def to_device(values: list[Any], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a tensor on ``device``."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    # From pinned memory the copy is truly asynchronous (from pageable memory the driver first waits for
    # the stream); torch's pinned-memory cache keeps the block until the copy has run.
    return host.pin_memory().to(device, non_blocking=True)


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """``tensor`` as a numpy array of its own (waits only for the work that produced it)."""
    if tensor.device.type != "cuda":
        return tensor.numpy(force=True).copy()
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(tensor.device))  # the copy's stream, whichever GPU is current
    done.synchronize()
    return pinned.numpy().copy()  # the pinned block goes back to torch's host cache


def hand_over(
    tensors: Iterable[torch.Tensor], maker: torch.cuda.Stream | None, readers: Sequence[torch.cuda.Stream]
) -> None:
    """Tensors made on the stream ``maker`` that work queued later on ``readers`` reads: each reader waits
    for the maker's work so far (on the device; the host goes on), and the caching allocator keeps each
    tensor's memory until the readers' work queued before its release has run. ``maker`` None: the
    tensors were made on the readers' own stream, nothing to do."""
    if maker is None:
        return
    for reader in readers:
        reader.wait_stream(maker)
    for tensor in tensors:
        for reader in readers:
            tensor.record_stream(reader)
