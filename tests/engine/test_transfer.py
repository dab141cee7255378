"""Host/device copies: values and dtypes survive, and a downloaded array is the caller's own."""

from __future__ import annotations

import numpy as np
import torch

from qwen3_tts_serving.engine.transfer import hand_over, to_device, to_host


def test_uploads_keep_values_and_dtype():
    uploaded = to_device([3, 1, 2], torch.long, torch.device("cpu"))
    assert uploaded.dtype == torch.long and uploaded.tolist() == [3, 1, 2]
    flags = to_device([True, False], torch.bool, torch.device("cpu"))
    assert flags.dtype == torch.bool and flags.tolist() == [True, False]


def test_a_download_does_not_share_memory_with_the_tensor():
    tensor = torch.arange(6, dtype=torch.float32).view(2, 3)
    array = to_host(tensor)
    tensor.zero_()
    np.testing.assert_array_equal(array, np.arange(6, dtype=np.float32).reshape(2, 3))


class _StandInStream:
    """What hand_over asks of a CUDA stream (there is no GPU here)."""

    def __init__(self) -> None:
        self.waited_for: list[object] = []

    def wait_stream(self, other: object) -> None:
        self.waited_for.append(other)


class _StandInTensor:
    def __init__(self) -> None:
        self.read_on: list[object] = []

    def record_stream(self, stream: object) -> None:
        self.read_on.append(stream)


def test_a_hand_over_orders_the_readers_after_the_maker_and_keeps_the_memory_for_them():
    maker, steps, decoder = _StandInStream(), _StandInStream(), _StandInStream()
    made = [_StandInTensor(), _StandInTensor()]
    hand_over(made, maker, [steps, decoder])  # type: ignore[arg-type]
    assert steps.waited_for == [maker] and decoder.waited_for == [maker]
    assert all(tensor.read_on == [steps, decoder] for tensor in made)


def test_work_made_on_the_readers_own_stream_needs_no_hand_over():
    steps, made = _StandInStream(), _StandInTensor()
    hand_over([made], None, [steps])  # type: ignore[arg-type,list-item]
    assert steps.waited_for == [] and made.read_on == []
