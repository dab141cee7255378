"""The code predictor's two runners agree token for token, on the real predictor of a tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen3_tts_serving.engine.code_predictor import (
    ReferenceCodePredictor,
    StaticCodePredictor,
    frame_step_predictor,
)
from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.engine.sampling import SamplerRows


@pytest.fixture(scope="module")
def talker(load_tts):
    return load_tts(Capability.CUSTOM_VOICE).model.talker


def _inputs(talker, batch: int, *, do_sample: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    past_hidden = torch.randn(batch, 1, talker.config.hidden_size, generator=generator)
    cb0 = torch.randint(0, 2048, (batch,), generator=generator)
    rows = SamplerRows.build(
        do_sample=[do_sample] * batch,
        temperature=[0.9] * batch,
        top_k=[50] * batch,
        top_p=[1.0 if row % 2 else 0.9 for row in range(batch)],
        seed=[1000 + row for row in range(batch)],
        device=torch.device("cpu"),
    )
    return past_hidden, cb0, rows, torch.arange(batch) * 7


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_static_runner_equals_the_reference(talker, batch, do_sample):
    inputs = _inputs(talker, batch, do_sample=do_sample)
    with torch.inference_mode():
        expected = ReferenceCodePredictor(talker).predict(*inputs)
        static = StaticCodePredictor(talker).predict(*inputs)
        sync_free = StaticCodePredictor(talker, sync_free=True).predict(*inputs)
    assert expected.shape == (batch, 16)
    assert torch.equal(expected[:, 0], inputs[1])  # codebook 0 is the talker's, passed through
    assert torch.equal(static, expected)
    assert torch.equal(sync_free, expected)


def test_the_frame_step_runs_the_static_loop_or_the_reference(talker):
    assert isinstance(frame_step_predictor(talker, "auto"), StaticCodePredictor)
    assert isinstance(frame_step_predictor(talker, "static"), StaticCodePredictor)
    assert isinstance(frame_step_predictor(talker, "reference"), ReferenceCodePredictor)
    with pytest.raises(ValueError, match="needs a CUDA device; on a CPU: static or reference"):
        frame_step_predictor(talker, "cuda_graphs")
    with pytest.raises(ValueError, match="valid: auto, reference, static, cuda_graphs"):
        frame_step_predictor(talker, "fast")


def test_config_checks_the_runner_and_its_buckets(tmp_path: Path):
    base = {"checkpoint_dir": str(tmp_path)}
    with pytest.raises(
        ValueError, match="code_predictor 'fast'; valid: auto, reference, static, cuda_graphs"
    ):
        EngineConfig.from_parameters({**base, "code_predictor": "fast"})
    with pytest.raises(ValueError, match="decoder_mode 'exact'; valid: streaming, windowed"):
        EngineConfig.from_parameters({**base, "decoder_mode": "exact"})
    with pytest.raises(ValueError, match="cuda_graph_batch_sizes '1,x'"):
        EngineConfig.from_parameters({**base, "cuda_graph_batch_sizes": "1,x"})
    config = EngineConfig.from_parameters(
        {**base, "cuda_graph_batch_sizes": "8, 1,2,128", "max_active_streams": "48"}
    )
    assert config.graph_buckets == [1, 2, 8, 48]
