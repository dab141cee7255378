"""Batching is real: a steady-state step issues as many device operations for 4 streams as for 1 (one
batched call for all of them, never a loop over them in disguise), and with its graphs (rehearsed here, as
on a GPU) almost none outside them. On a GPU each eagerly dispatched operation is a kernel launch the host
pays for: the count is what the CUDA graphs are there to remove."""

from __future__ import annotations

import torch
from engine_requests import custom_voice
from graph_rehearsal import both_frame_paths

from qwen3_tts_serving.engine.engine import StreamingEngine
from qwen3_tts_serving.engine.op_count import DeviceOpCounter, not_counted
from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.engine.streams import CollectingSink

WARM_UP_STEPS = 3  # admission, prefill and the first chunks
MEASURED_STEPS = 8  # frames, and chunks on the 1, 1, 2, 4, 4 schedule
# Outside its graphs a frame step with no chunk due copies the text inputs in and the frame's codes out.
MOST_OPS_OUTSIDE_GRAPHS = 8


def ops_per_step(engine: StreamingEngine, streams: int) -> list[int]:
    """Device operations of each steady-state step of ``streams`` identical streams (same chunk schedule)."""
    request = custom_voice("Every one of these sentences runs on for a good long while.", max_new_tokens=40)
    sinks = [CollectingSink() for _ in range(streams)]
    engine.submit([engine.make_stream(engine.validate(request), sink) for sink in sinks])
    for _ in range(WARM_UP_STEPS):
        engine.step()
    counts = []
    for _ in range(MEASURED_STEPS):
        with DeviceOpCounter() as ops:
            engine.step()
        counts.append(ops.total)
    assert engine.active_count == streams  # every step measured ran all of them
    engine.run_until_idle()
    assert all(sink.error is None and sink.chunks[-1].is_last for sink in sinks)
    return counts


@both_frame_paths
def test_a_step_issues_as_many_device_operations_for_four_streams_as_for_one(make_engine):
    alone = ops_per_step(make_engine(Capability.CUSTOM_VOICE, repetition_window=0), 1)
    engine = make_engine(Capability.CUSTOM_VOICE, repetition_window=0)
    batched = ops_per_step(engine, 4)
    assert batched == alone
    assert len(set(alone)) > 1  # steps with and without a chunk to decode were both measured
    if engine.frame_step.graphed:
        assert min(alone) <= MOST_OPS_OUTSIDE_GRAPHS, alone


def test_the_counter_counts_launches_not_views_and_skips_what_is_not_counted():
    x = torch.ones(4, 3)
    with DeviceOpCounter() as ops:
        y = x[1:].t()  # views: nothing launched
        z = y * 2 + 1
        with not_counted():
            z.sum()
    assert ops.by_op == {"aten.mul": 1, "aten.add": 1}
    assert ops.total == 2 and z.shape == (3, 3)
