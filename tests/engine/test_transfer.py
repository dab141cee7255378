"""Host/device copies: values and dtypes survive, and a downloaded array is the caller's own."""

from __future__ import annotations

import numpy as np
import torch

from qwen3_tts_serving.engine.transfer import to_device, to_host


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
