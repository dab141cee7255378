"""The frame step's and the decoder's CUDA-graph path, rehearsed on the CPU (graph_rehearsal): the same
audio as the eager engine for every kind of sampling, captures that hold no host synchronisation, and a
steady-state step that reads the host only where the design says (the CPU side of the GPU benchmark's
set_sync_debug_mode check)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_requests import custom_voice, run_to_end
from graph_rehearsal import REHEARSAL_SETTINGS, both_frame_paths, rehearsed_graphs

from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.engine import StreamingEngine
from qwen3_tts_serving.engine.frame_step import FrameStep
from qwen3_tts_serving.engine.host_sync import ENGINE_READS, HostSyncError, HostSyncGuard
from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.engine.streams import CollectingSink

AUDIO_ATOL = 1e-4
COLLECT = "qwen3_tts_serving.engine.frame_step.FrameStep.collect"

# One of each sampler route: greedy with a repetition penalty, top-k (the candidates shortcut when
# eager), top-p alone over the whole vocabulary, a low temperature with a small top-k, and a greedy
# talker over a sampling code predictor. Lengths cross the 64-key bucket.
REQUESTS = [
    custom_voice("Graphs and eager agree on this longer one, said slowly.", repetition_penalty=1.3),
    custom_voice("A sampled one.", do_sample=True, seed=5),
    custom_voice("Top p alone.", do_sample=True, seed=7, top_k=0, top_p=0.8),
    custom_voice("Cool and narrow.", do_sample=True, seed=11, temperature=0.6, top_k=5),
    custom_voice(
        "Only the codes sample.", seed=13, subtalker_do_sample=True, subtalker_top_k=0, subtalker_top_p=0.7
    ),
]


@pytest.fixture(scope="module")
def config(checkpoint_root: Path) -> EngineConfig:
    return EngineConfig(
        checkpoint_dir=checkpoint_root / "custom_voice",
        device="cpu",
        realtime_step_budget_s=0.0,
        repetition_window=0,
        max_new_tokens=80,
        **REHEARSAL_SETTINGS,  # type: ignore[arg-type]
    )


def _rehearsed(load_tts, config: EngineConfig) -> StreamingEngine:
    with rehearsed_graphs():
        engine = StreamingEngine(load_tts(Capability.CUSTOM_VOICE), Capability.CUSTOM_VOICE, config)
    assert engine.frame_step.graphed and engine.decoder.graphed  # type: ignore[attr-defined]
    return engine


def test_rehearsed_graphs_give_the_eager_engines_audio_for_every_sampler(load_tts, config):
    graphed = _rehearsed(load_tts, config)
    eager = StreamingEngine(
        load_tts(Capability.CUSTOM_VOICE), Capability.CUSTOM_VOICE, replace(config, cuda_graphs="off")
    )
    # Alone, the eager step takes its host shortcuts (argmax only, top-k candidates only); batched, the
    # graphs compute every route in full for every row.
    alone = [run_to_end(eager, [request])[0] for request in REQUESTS]
    for with_graphs, without in zip(run_to_end(graphed, REQUESTS), alone, strict=True):
        assert with_graphs.audio().shape == without.audio().shape
        np.testing.assert_allclose(with_graphs.audio(), without.audio(), atol=AUDIO_ATOL)
        assert with_graphs.finish_reason == without.finish_reason
    # The graphs ran, in more than one batch and key-length bucket (5 streams, then fewer as they end).
    replayed = [key for key, graph in graphed.frame_step._graphs.items() if graph.replays]
    assert len({batch for batch, _ in replayed}) > 1 and len({length for _, length in replayed}) > 1
    assert any(graph.replays for graph in graphed.decoder._graphs.values())  # type: ignore[attr-defined]


@both_frame_paths
def test_a_steady_state_step_reads_the_host_only_where_designed(make_engine):
    engine = make_engine(Capability.CUSTOM_VOICE, repetition_window=0)
    sinks = [CollectingSink() for _ in REQUESTS]
    requests = [replace(r, sampling={**r.sampling, "max_new_tokens": 60}) for r in REQUESTS]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)])
    for _ in range(3):  # admission (prompt building and prefill read the host) and the first chunks
        engine.step()
    assert engine.active_count == len(REQUESTS)
    with HostSyncGuard(ENGINE_READS) as guard:
        for _ in range(12):  # frames, chunk decoding and sending
            engine.step()
    assert guard.reads[COLLECT] == 12  # one frame report read back per step, nothing else
    engine.run_until_idle()
    assert all(sink.error is None and sink.chunks[-1].is_last for sink in sinks)


def test_a_host_read_inside_the_frame_step_fails_its_capture(load_tts, config, monkeypatch, caplog):
    choose = FrameStep._choose_cb0

    def choose_and_peek(self, logits, *args):  # a debugging line left in the captured function
        logits.max().item()
        return choose(self, logits, *args)

    monkeypatch.setattr(FrameStep, "_choose_cb0", choose_and_peek)
    with pytest.raises(HostSyncError, match=r"item reads a tensor on the host.*test_graph_rehearsal\.py"):
        _rehearsed(load_tts, config)
    # cuda_graphs=auto serves anyway, eagerly, and says why.
    with rehearsed_graphs():
        engine = StreamingEngine(
            load_tts(Capability.CUSTOM_VOICE), Capability.CUSTOM_VOICE, replace(config, cuda_graphs="auto")
        )
    assert not engine.frame_step.graphed
    assert "capture of the frame step failed" in caplog.text
    (sink,) = run_to_end(engine, [custom_voice("Served eagerly.")])
    assert sink.chunks[-1].is_last


def test_the_guard_catches_a_host_read_in_a_steady_state_step(make_engine, monkeypatch):
    engine = make_engine(Capability.CUSTOM_VOICE)
    sink = CollectingSink()
    engine.submit([engine.make_stream(engine.validate(custom_voice("Peeking.")), sink)])
    for _ in range(3):
        engine.step()
    set_text_inputs = engine.frame_step.set_text_inputs

    def peek(embeddings: list[torch.Tensor]) -> None:
        set_text_inputs(embeddings)
        bool(engine.frame_step.state.active.any())  # "are any active?" waits for the GPU

    monkeypatch.setattr(engine.frame_step, "set_text_inputs", peek)
    with pytest.raises(HostSyncError, match="__bool__"), HostSyncGuard(ENGINE_READS):
        engine.step()
