"""The frame step and the codec decoder as CUDA graphs (skipped without a GPU): same audio as eager, and a
steady-state engine step with no host synchronisation (``torch.cuda.set_sync_debug_mode("error")``)."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_requests import custom_voice, run_to_end

from qwen3_tts_serving.engine import graphs
from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.engine import StreamingEngine
from qwen3_tts_serving.engine.loading import load_model
from qwen3_tts_serving.engine.requests import Capability, SynthesisRequest
from qwen3_tts_serving.engine.streams import CollectingSink

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

AUDIO_ATOL = 1e-3  # a GPU's kernels round differently from the CPU's


@pytest.fixture(scope="module")
def config(checkpoint_root: Path) -> EngineConfig:
    return EngineConfig(
        checkpoint_dir=checkpoint_root / "custom_voice",
        device="cuda",
        dtype="float32",
        realtime_step_budget_s=0.0,
        max_active_streams=8,
        cuda_graph_batch_sizes="1,4",
        slot_max_length=512,
        attention_length_buckets="128,256",
        repetition_window=0,
    )


@pytest.fixture(autouse=True)
def _engines_freed_between_tests():
    yield
    # An engine's graphs freed by a later collection, after the next engine captured on a stream from the
    # same pool, could take that stream's cuBLAS workspace with them (some torch versions free it).
    gc.collect()


@pytest.fixture(scope="module")
def tts(config: EngineConfig) -> Any:
    return load_model(config, Capability.CUSTOM_VOICE)


def _request(text: str, **sampling: object) -> SynthesisRequest:
    return custom_voice(text, **{"max_new_tokens": 40, **sampling})


def test_graphed_and_eager_frame_steps_give_the_same_audio(tts, config):
    requests = [_request("Graphs and eager agree."), _request("A sampled one.", do_sample=True, seed=5)]
    graphed = StreamingEngine(tts, Capability.CUSTOM_VOICE, replace(config, cuda_graphs="on"))
    assert graphed.frame_step.graphed and graphed.decoder.graphed  # type: ignore[union-attr]
    eager = StreamingEngine(tts, Capability.CUSTOM_VOICE, replace(config, cuda_graphs="off"))
    assert not eager.frame_step.graphed and not eager.decoder.graphed  # type: ignore[union-attr]
    for with_graphs, without in zip(run_to_end(graphed, requests), run_to_end(eager, requests), strict=True):
        assert with_graphs.audio().shape == without.audio().shape
        np.testing.assert_allclose(with_graphs.audio(), without.audio(), atol=AUDIO_ATOL)


def test_a_steady_state_step_never_synchronises_the_host(tts, config):
    engine = StreamingEngine(tts, Capability.CUSTOM_VOICE, replace(config, cuda_graphs="on"))
    sinks = [CollectingSink() for _ in range(3)]
    requests = [_request(f"Steady state number {i}, speaking on.", max_new_tokens=60) for i in range(3)]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)])
    for _ in range(3):  # admission (prompt building and prefill synchronise) and the first chunks
        engine.step()
    assert engine.active_count == 3
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(12):  # frames, chunk decoding and sending
            engine.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    engine.run_until_idle()
    assert all(sink.error is None and sink.chunks[-1].is_last for sink in sinks)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_an_engine_on_the_second_gpu_on_a_thread_of_its_own_gives_the_first_gpus_audio(tts, config):
    """CUDA's current device is per thread: the engine's own thread starts on GPU 0, and whatever of a
    step takes no device (events, the decoder's stream) must still land on the engine's GPU."""
    requests = [_request("On the second GPU."), _request("Sampled there.", do_sample=True, seed=3)]
    voice = Capability.CUSTOM_VOICE
    first = run_to_end(StreamingEngine(tts, voice, replace(config, cuda_graphs="on")), requests)
    second = replace(config, device="cuda:1", cuda_graphs="on")
    engine = StreamingEngine(load_model(second, voice), voice, second)
    sinks = [CollectingSink() for _ in requests]
    engine.start()
    try:
        streams = [engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)]
        engine.submit(streams)
        assert all(sink.done.wait(timeout=120) for sink in sinks)
    finally:
        engine.stop()
    for on_second, on_first in zip(sinks, first, strict=True):
        assert on_second.error is None
        np.testing.assert_allclose(on_second.audio(), on_first.audio(), atol=AUDIO_ATOL)


def test_graph_families_capture_on_streams_of_their_own_and_a_failed_capture_gives_the_stream_back():
    """cuBLAS keeps a workspace per (handle, stream) and a graph bakes in its capture stream's: the frame
    step's and the decoder's graphs, replayed side by side, must not have been captured on one stream. And
    torch.cuda.graph leaves a failed capture's thread on the capture stream; capture_graph does not."""
    device = torch.device("cuda")
    frame_family, decoder_family = graphs.new_family(device), graphs.new_family(device)
    assert frame_family.stream != decoder_family.stream
    caller = torch.cuda.current_stream()
    ones = torch.ones(4, device=device)

    def host_sync() -> float:  # fine eagerly (the warm-ups), refused while capturing
        return float(ones.sum().item())

    # Under inference_mode, as the engines capture: an engine built earlier in this process has created the
    # CUDA generator's graph state as inference tensors, and a capture outside the mode then fails on them
    # (pytorch#166792).
    with torch.inference_mode():
        with pytest.raises(RuntimeError):
            graphs.capture_graph(host_sync, frame_family)
        assert torch.cuda.current_stream() == caller
        graph, out = graphs.capture_graph(lambda: ones * 2, decoder_family)
        graph.replay()
    assert torch.equal(out, torch.full((4,), 2.0, device=device))
