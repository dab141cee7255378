"""HostSyncGuard, the CPU stand-in for torch.cuda.set_sync_debug_mode("error"): what it flags, what it lets
through, and where it says the offence was."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from qwen3_tts_serving.engine.host_sync import HostSyncError, HostSyncGuard

VALUES = torch.arange(6.0)

WAITING: dict[str, Callable[[], object]] = {
    "item": lambda: VALUES[0].item(),
    "tolist": lambda: VALUES.tolist(),
    "numpy": lambda: VALUES.numpy(),
    "cpu": lambda: VALUES.cpu(),
    "__format__": lambda: f"{VALUES[0]:.1f}",
    "__bool__": lambda: bool(VALUES[0] > 1),
    "__int__": lambda: int(VALUES[1]),
    "__float__": lambda: float(VALUES[1]),
    "aten::nonzero": lambda: VALUES.nonzero(),
    "aten::masked_select": lambda: VALUES.masked_select(VALUES > 2),
    "aten::index with a boolean mask": lambda: VALUES[VALUES > 2],
    "aten::index_put_ with a boolean mask": lambda: VALUES.clone().__setitem__(VALUES > 2, 0.0),
    "aten::_unique2": lambda: VALUES.unique(),
    "aten::repeat_interleave without output_size": lambda: VALUES.repeat_interleave(VALUES.long()),
    "made from host data": lambda: torch.tensor([1]),
}

FINE: dict[str, Callable[[], object]] = {
    "arithmetic and argmax": lambda: (VALUES * 2).argmax(),
    "a masked fill": lambda: VALUES.masked_fill(VALUES > 2, 0.0),
    "a Python scalar written into a slice": lambda: VALUES.clone().__setitem__(slice(0, 2), 0.0),
    "a 0-dim tensor from a number": lambda: torch.tensor(1.0),
    "an empty tensor": lambda: torch.tensor([]),
    "repeats given as a number": lambda: VALUES.repeat_interleave(2),
    "sort and topk": lambda: (VALUES.sort(), VALUES.topk(2)),
    "a dtype change": lambda: VALUES.to(torch.float64),
}


@pytest.mark.parametrize("what", sorted(WAITING))
def test_every_operation_that_waits_for_the_gpu_is_flagged_where_it_is_called(what):
    with pytest.raises(HostSyncError) as raised, HostSyncGuard():
        WAITING[what]()
    assert what in str(raised.value)
    assert "test_host_sync.py:" in str(raised.value)  # the caller, not torch or the guard


@pytest.mark.parametrize("what", sorted(FINE))
def test_device_side_operations_pass(what):
    with HostSyncGuard():
        FINE[what]()


def _designed_read() -> list[float]:
    return VALUES.tolist()


def test_a_read_inside_an_allowed_function_is_counted_not_flagged():
    name = f"{__name__}._designed_read"
    with HostSyncGuard(allowed=[name]) as guard:
        _designed_read()
        _designed_read()
    assert guard.reads == {name: 2}
    with pytest.raises(HostSyncError), HostSyncGuard(allowed=[name]):
        VALUES.tolist()


def test_the_guard_is_gone_after_its_block():
    with pytest.raises(HostSyncError), HostSyncGuard():
        VALUES[0].item()
    assert VALUES[0].item() == 0.0
