"""``python -m benchmarks.gpu_engine``: the engine in-process on one GPU, no Triton, one command.

Made for the GPU machines we get to measure on (no tritonserver, no internet; BENCHMARKS.md has the
recipe, ``benchmarks/gpu/run.sh`` the set-up). It builds (or reuses) the full-size random 1.7B CustomVoice
checkpoint on the GPU, loads it with the package's ``Qwen3TTSModel.from_pretrained`` through the engine's
loader, and measures through the engine's public API only (``make_stream``, ``submit``, ``step``,
``start``/``stop``, ``stats`` and an observer), so it survives rewrites of the engine's insides:

- ``graphs``: correctness first: a few greedy streams on an engine with the frame step captured as CUDA
  graphs and on one running it eagerly (``cuda_graphs=off``) must give the same audio (on a CPU both run
  eagerly);
- ``batches``: B streams submitted together; ms per frame step in steady state (after admission and the
  first chunks) and audio seconds per second, B = 1 8 32 64 128; then, untimed, the device operations
  each step dispatched from the host (``engine.op_count``: kernel launches outside the CUDA graphs; the
  same at every B when batching is real);
- ``load``: closed loop at c = 1 8 16 32 64 128 (c workers, each submitting its next stream as soon as its
  last one ended) for a fixed window, then a bounded drain: first audio p50/p95 (submit to first chunk),
  per-stream real-time factor, streams that underran (a listener who starts playing at the first chunk
  runs dry before the next one arrives), audio-s/s delivered within the window;
- ``baseline``: the package's own ``generate_custom_voice`` (non-streaming) at batch 1 and 8;
- ``breakdown``: the step's stage times (:class:`benchmarks.profile.StageTimers`) at B=1 and the largest B;
- ``sync``: a few steady-state steps under ``torch.cuda.set_sync_debug_mode("error")`` (on a CPU under
  ``HostSyncGuard``, its stand-in): pass, or the first operation that waited for the GPU.

Every level has a time box and the run a budget (default 450 s), so it ends within 8 minutes however fast
the engine is; what did not fit, or failed, is reported and the rest still runs. Results are rewritten
after every section (``results.json``, ``results.md``), so even a killed run leaves what it measured.
``--quick`` runs every section on the CPU with the tiny checkpoints in well under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import logging
import queue
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import sysinfo, targets
from benchmarks.kernels import kernels_lines, profile_steps
from benchmarks.profile import StageTimers, breakdown, instrument
from benchmarks.profile import _request as custom_voice_request
from benchmarks.report import _f, _jsonable
from benchmarks.stats import RequestRecord, percentile, summarize_level
from benchmarks.texts import LONG_TEXTS
from qwen3_tts_serving.engine.observer import NullObserver
from qwen3_tts_serving.settings import PROJECT_ROOT

logger = logging.getLogger("benchmarks.gpu_engine")

SECTIONS = ("graphs", "sync", "batches", "load", "baseline", "breakdown", "kernels")  # in the order they run
# Graphed and eager steps run the same kernels, but cuBLAS may reduce in another order inside a graph: a
# bf16 step near full scale is 3.9e-3, and a capture bug gives garbage, far above this.
GRAPH_AUDIO_ATOL = 1e-2
FLAVOUR = "custom_voice"
SPEAKER, LANGUAGE = "ryan", "english"


@dataclass(frozen=True)
class Plan:
    """Sizes and time boxes of one run; every field has a command-line flag of the same name (PLAN_HELP)."""

    preset: str
    device: str
    batches: tuple[int, ...]
    concurrency: tuple[int, ...]
    warmup_steps: int
    batch_steps: int
    op_count_steps: int
    batch_box_s: float
    frames: int
    window_s: float
    drain_s: float
    reserve_s: float
    baseline_batches: tuple[int, ...]
    baseline_frames: int
    breakdown_steps: int
    sync_batch: int
    sync_steps: int
    kernel_steps: int
    budget_s: float

    @property
    def breakdown_batches(self) -> tuple[int, ...]:
        return tuple(sorted({min(self.batches), max(self.batches)}))

    @property
    def batch_frames(self) -> int:
        """Frames per stream of a fixed batch: none of them may end inside the timed steps."""
        return self.warmup_steps + self.batch_steps + self.op_count_steps + 8

    @property
    def max_streams(self) -> int:
        return max(*self.batches, *self.concurrency, self.sync_batch)


PLAN_HELP = {
    "preset": "random-weight checkpoints to build (tiny, full-1.7b, full-0.6b)",
    "device": "cpu, cuda or cuda:N: where the checkpoint is built and the engine runs",
    "batches": "fixed batch sizes B",
    "concurrency": "closed-loop load levels c",
    "warmup_steps": "steps after admission before timing (first chunks, graph capture, allocator)",
    "batch_steps": "steady-state steps timed per batch size",
    "op_count_steps": "steady-state steps per batch size whose device operations are counted (untimed)",
    "batch_box_s": "time box of one batch size (and of one breakdown batch), warm-up included",
    "frames": "frames per stream at most in the load levels (64 frames: 5.1 s of audio)",
    "window_s": "seconds each load level keeps submitting",
    "drain_s": "then its streams in flight get this long to end; the rest are cut (and counted)",
    "reserve_s": "batch sizes and load levels leave this much of the budget to the sections after them",
    "baseline_batches": "batch sizes of the package's generate_custom_voice",
    "baseline_frames": "its max_new_tokens",
    "breakdown_steps": "steps timed per breakdown batch (B = the smallest and largest of --batches)",
    "sync_batch": "streams running during the sync check",
    "sync_steps": "steady-state steps under set_sync_debug_mode('error')",
    "kernel_steps": "steady-state steps under torch.profiler, fresh engine, B = the largest of --batches",
    "budget_s": "the whole run from the checkpoint on: levels and sections that would not fit are skipped",
}

# Sized for the current engine (~100 ms per step on an H100) to finish in about 5 minutes and within the
# 450 s budget; a fast engine finishes sooner.
GPU = Plan(
    preset="full-1.7b",
    device="cuda",
    batches=(1, 8, 32, 64, 128),
    concurrency=(1, 8, 16, 32, 64, 128),
    warmup_steps=8,
    batch_steps=24,
    op_count_steps=8,
    batch_box_s=25.0,
    frames=64,
    window_s=8.0,
    drain_s=12.0,
    reserve_s=75.0,
    baseline_batches=(1, 8),
    baseline_frames=32,
    breakdown_steps=12,
    sync_batch=8,
    sync_steps=8,
    kernel_steps=6,
    budget_s=420.0,
)
QUICK = Plan(
    preset="tiny",
    device="cpu",
    batches=(1, 2),
    concurrency=(1, 2),
    warmup_steps=2,
    batch_steps=4,
    op_count_steps=4,
    batch_box_s=10.0,
    frames=8,
    window_s=1.0,
    drain_s=10.0,
    reserve_s=5.0,
    baseline_batches=(1,),
    baseline_frames=4,
    breakdown_steps=3,
    sync_batch=1,
    sync_steps=2,
    kernel_steps=2,
    budget_s=120.0,
)


class Budget:
    """The run's time budget (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# --------------------------------------------------------------------------------------------- streams
class TimelineSink:
    """A stream's sink that keeps when each chunk arrived and how long it plays (no audio)."""

    def __init__(self, on_end: Callable[[], None] | None = None) -> None:
        self.submitted_at: float | None = None
        # (time.monotonic() of arrival, seconds of audio) per chunk: one append per chunk, so a reader on
        # another thread never sees half a chunk.
        self.timeline: list[tuple[float, float]] = []
        self.finish_reason = ""
        self.error: str | None = None
        self.cancelled = False
        self.ended = False
        self.cut = False  # still running when its level's time box ended
        self._on_end = on_end

    def send(self, chunk: Any) -> None:
        self.timeline.append((time.monotonic(), chunk.audio.size / chunk.sample_rate))
        if chunk.is_last:
            self.finish_reason = chunk.finish_reason
            self._end()

    def fail(self, error: Exception) -> None:
        self.error = str(error) or type(error).__name__
        self._end()

    def is_cancelled(self) -> bool:
        return self.cancelled

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            if self._on_end is not None:
                self._on_end()

    def record(self, concurrency: int, index: int, level_started: float) -> RequestRecord:
        """The stream as the load tool's records have it: times from submitting it."""
        submitted = self.submitted_at if self.submitted_at is not None else level_started
        timeline = list(self.timeline)
        arrivals = [t - submitted for t, _ in timeline]
        durations = [d for _, d in timeline]
        audible = [t for t, d in zip(arrivals, durations, strict=True) if d > 0]
        error = self.error
        if self.cut:
            error = "cut: still speaking when the level's time box ended"
        elif not self.ended:
            error = "never ended"
        return RequestRecord(
            path="engine",
            concurrency=concurrency,
            index=index,
            start_s=submitted - level_started,
            ttfa_s=audible[0] if audible else None,
            total_s=arrivals[-1] if arrivals and error is None else None,
            audio_s=sum(durations),
            chunks=len(arrivals),
            finish_reason=self.finish_reason,
            error=error,
            arrivals_s=arrivals,
            durations_s=durations,
        )


class StepRecorder(NullObserver):
    """The engine's own account of its steps (observer API): time, frames and the running batch."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.frames = 0
        self.seconds = 0.0
        self.active_total = 0
        self.active = 0  # running batch at the last step

    def step_done(
        self, *, seconds: float, frames: int, active: int, queued: int, paused: int, mixed: bool = False
    ) -> None:
        self.steps += 1
        self.frames += frames
        self.seconds += seconds
        self.active_total += active
        self.active = active

    def figures(self) -> dict[str, float | None]:
        return {
            "engine_steps": self.steps,
            "engine_ms_per_step": self.seconds * 1000 / self.steps if self.steps else None,
            "mean_batch": self.active_total / self.steps if self.steps else None,
        }


@dataclass
class Bench:
    """What every section works with: the loaded model, the engine's pieces and the clock."""

    tts: Any
    plan: Plan
    engine_parameters: dict[str, str]
    frame_s: float  # seconds of audio per frame
    synchronize: Callable[[], None]
    seed: int = 0
    submitted: int = 0  # streams so far: stream i samples with seed + i

    def engine_config(self, max_active_streams: int) -> Any:
        from qwen3_tts_serving.engine.config import EngineConfig

        parameters = {"max_active_streams": str(max_active_streams), **self.engine_parameters}
        return EngineConfig.from_parameters(parameters)

    def engine(self, observer: StepRecorder, max_active_streams: int) -> Any:
        from qwen3_tts_serving.engine.engine import StreamingEngine
        from qwen3_tts_serving.engine.requests import Capability

        config = self.engine_config(max_active_streams)
        return StreamingEngine(self.tts, Capability.CUSTOM_VOICE, config, observer)

    def streams(self, engine: Any, sinks: Sequence[TimelineSink], frames: int) -> list[Any]:
        streams = []
        for sink in sinks:
            text = LONG_TEXTS[self.submitted % len(LONG_TEXTS)]
            request = custom_voice_request(FLAVOUR, text, frames, self.seed + self.submitted)
            streams.append(engine.make_stream(engine.validate(request), sink))
            self.submitted += 1
        return streams


def _settle(engine: Any, sinks: Sequence[TimelineSink]) -> None:
    """Cancel what is still running and step until the engine is idle (driven engines)."""
    for sink in sinks:
        sink.cancelled = True
    engine.run_until_idle()


def _warm_up(
    engine: Any, recorder: StepRecorder, sinks: Sequence[TimelineSink], steps: int, box_end: float
) -> None:
    """Step until all streams of ``sinks`` run, then ``steps`` more; raise when one fails or the box ends."""
    recorder.active, warm = 0, 0
    while warm < steps:
        failed = [sink.error for sink in sinks if sink.error]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(sinks)} streams failed: {failed[0]}")
        if time.monotonic() > box_end:
            raise TimeoutError(f"warm-up did not finish in the time box (running batch {recorder.active})")
        engine.step()
        if recorder.active >= len(sinks):
            warm += 1


# -------------------------------------------------------------------------------------------- sections
def measure_batch(bench: Bench, engine: Any, recorder: StepRecorder, batch: int) -> dict[str, Any]:
    """B streams together: ms per steady-state frame step (host clock, device synchronised at both ends of
    the timed steps) and audio seconds per second."""
    plan = bench.plan
    box_end = time.monotonic() + plan.batch_box_s
    sinks = [TimelineSink() for _ in range(batch)]
    engine.submit(bench.streams(engine, sinks, plan.batch_frames))
    try:
        _warm_up(engine, recorder, sinks, plan.warmup_steps, box_end)
        host: list[float] = []
        bench.synchronize()
        frames_before, started = engine.stats.frames, time.perf_counter()
        for _ in range(plan.batch_steps):
            step_started = time.perf_counter()
            engine.step()
            host.append(time.perf_counter() - step_started)
            if recorder.active < batch or time.monotonic() > box_end:
                break  # a stream ended (or the box did): the batch is no longer B
        bench.synchronize()
        elapsed = time.perf_counter() - started
        frames = engine.stats.frames - frames_before
        ops = count_ops_per_step(engine, recorder, batch, plan.op_count_steps, box_end)
    finally:
        _settle(engine, sinks)
    failed = [s.error for s in sinks if s.error]
    if failed:
        raise RuntimeError(f"{len(failed)} of {batch} streams failed: {failed[0]}")
    steps = len(host)
    return {
        "batch": batch,
        "steps": steps,
        "frames": frames,
        "mean_batch": frames / steps if steps else None,
        "elapsed_s": elapsed,
        "ms_per_step": elapsed * 1000 / steps if steps else None,
        "host_ms_p50": _ms(percentile(host, 50)),
        "host_ms_p95": _ms(percentile(host, 95)),
        "audio_s_per_s": frames * bench.frame_s / elapsed if elapsed > 0 else None,
        "ops_per_step": ops,
        "ops_p50": percentile(ops, 50) if ops else None,
        "ops_max": max(ops) if ops else None,
    }


def count_ops_per_step(
    engine: Any, recorder: StepRecorder, batch: int, steps: int, box_end: float
) -> list[int]:
    """The device operations each of ``steps`` more steps of the full batch dispatched (untimed: counting
    slows the host). Stops early, like the timed steps, once the batch is no longer B."""
    from qwen3_tts_serving.engine.op_count import DeviceOpCounter

    counts = []
    for _ in range(steps):
        if recorder.active < batch or time.monotonic() > box_end:
            break
        with DeviceOpCounter() as ops:
            engine.step()
        counts.append(ops.total)
    return counts


def run_load_level(bench: Bench, engine: Any, recorder: StepRecorder, concurrency: int) -> dict[str, Any]:
    """Closed loop: ``concurrency`` workers, each submitting its next stream as soon as its last one
    ended, for ``window_s``; then the streams in flight get ``drain_s`` to end and the rest are cut."""
    plan = bench.plan
    ended: queue.Queue[int] = queue.Queue()
    sinks: list[TimelineSink] = []

    def submit(workers: Sequence[int]) -> None:
        batch = [TimelineSink(on_end=lambda worker=worker: ended.put(worker)) for worker in workers]
        streams = bench.streams(engine, batch, plan.frames)
        now = time.monotonic()
        for sink in batch:
            sink.submitted_at = now
        sinks.extend(batch)
        engine.submit(streams)

    recorder.reset()
    started = time.monotonic()
    window_end = started + plan.window_s
    submit(range(concurrency))  # the workers start together
    while (left := window_end - time.monotonic()) > 0:
        try:
            worker = ended.get(timeout=left)
        except queue.Empty:
            break
        submit([worker])
    drain_end = time.monotonic() + plan.drain_s
    while any(not s.ended for s in sinks) and time.monotonic() < drain_end:
        time.sleep(0.005)
    cut = [s for s in sinks if not s.ended]
    for sink in cut:
        sink.cut = sink.cancelled = True
    cancel_end = time.monotonic() + 10.0
    while any(not s.ended for s in cut) and time.monotonic() < cancel_end:
        time.sleep(0.005)
    records = [sink.record(concurrency, i, started) for i, sink in enumerate(sinks)]
    last_end = max((r.start_s + r.arrivals_s[-1] for r in records if r.arrivals_s), default=0.0)
    summary = summarize_level(records, wall_s=max(last_end, plan.window_s))
    in_window = sum(
        d
        for r in records
        for t, d in zip(r.arrivals_s, r.durations_s, strict=True)
        if r.start_s + t <= plan.window_s
    )
    return {
        **summary,
        "concurrency": concurrency,
        "window_s": plan.window_s,
        "cut": len(cut),
        # The closed loop holds c streams only until the window ends: throughput is what arrived in it.
        "audio_s_per_s_with_drain": summary["audio_s_per_s"],
        "audio_s_per_s": in_window / plan.window_s,
        **recorder.figures(),
    }


def run_baseline(bench: Bench, batch: int) -> dict[str, Any]:
    """The package's own non-streaming ``generate_custom_voice`` on the same texts, sampled."""
    import torch

    texts = [LONG_TEXTS[i % len(LONG_TEXTS)] for i in range(batch)]
    torch.manual_seed(bench.seed)
    bench.synchronize()
    started = time.perf_counter()
    wavs, sample_rate = bench.tts.generate_custom_voice(
        text=texts,
        speaker=[SPEAKER] * batch,
        language=[LANGUAGE] * batch,
        max_new_tokens=bench.plan.baseline_frames,
    )
    bench.synchronize()
    elapsed = time.perf_counter() - started
    audio_s = sum(wav.size for wav in wavs) / sample_rate
    longest_frames = max(wav.size for wav in wavs) / sample_rate / bench.frame_s
    return {
        "batch": batch,
        "max_new_tokens": bench.plan.baseline_frames,
        "elapsed_s": elapsed,
        "audio_s": audio_s,
        "audio_s_per_s": audio_s / elapsed if elapsed > 0 else None,
        "ms_per_frame": elapsed * 1000 / longest_frames if longest_frames else None,
        "rtf": elapsed / (audio_s / batch) if audio_s else None,
    }


class _Synchronizing:
    """The stage timers' device synchronisation, switched off once the breakdown is done (the timers stay
    around the engine's stages, and the sync check must not be tripped by them)."""

    def __init__(self, synchronize: Callable[[], None]) -> None:
        self.synchronize = synchronize
        self.on = True

    def __call__(self) -> None:
        if self.on:
            self.synchronize()


def run_breakdown(bench: Bench, engine: Any, recorder: StepRecorder, timers: StageTimers) -> dict[str, Any]:
    """Exclusive time per stage of a steady-state step at each batch size (synchronising timers)."""
    plan = bench.plan
    runs: dict[int, Any] = {}
    for batch in plan.breakdown_batches:
        box_end = time.monotonic() + plan.batch_box_s
        sinks = [TimelineSink() for _ in range(batch)]
        engine.submit(bench.streams(engine, sinks, plan.warmup_steps + plan.breakdown_steps + 8))
        try:
            _warm_up(engine, recorder, sinks, plan.warmup_steps, box_end)
            timers.totals.clear()
            timers.calls.clear()
            started, steps = time.perf_counter(), 0
            while steps < plan.breakdown_steps and time.monotonic() < box_end:
                engine.step()
                steps += 1
            elapsed = time.perf_counter() - started
        finally:
            _settle(engine, sinks)
        runs[batch] = {
            "batch": batch,
            "steps": steps,
            "ms_per_step": elapsed * 1000 / steps if steps else None,
            "stages": breakdown(timers, steps),
        }
    return runs


def check_host_syncs(
    step: Callable[[], None], steps: int, strict: Callable[[], AbstractContextManager[Any]]
) -> dict[str, Any]:
    """Run ``steps`` steps inside ``strict()``, which turns every host synchronisation into an error:
    ``pass``, or the first offending operation and where it was called from (the innermost frame outside
    torch and the guard)."""
    from qwen3_tts_serving.engine.host_sync import is_tooling_file

    done = 0
    try:
        with strict():
            for done in range(steps):  # noqa: B007 - ``done`` tells which step tripped
                step()
    except RuntimeError as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if not is_tooling_file(f.filename)]
        where = frames[-1] if frames else None
        return {
            "status": "fail",
            "steps": steps,
            "failed_at_step": done + 1,  # counted from 1
            "message": str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
            "where": f"{_relative(where.filename)}:{where.lineno} in {where.name}" if where else None,
            "code": where.line if where else None,
        }
    return {"status": "pass", "steps": steps}


@contextmanager
def cuda_sync_errors() -> Iterator[None]:
    """The GPU's own check: synchronising CUDA operations raise; the mode is always reset."""
    import torch

    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def run_sync_check(bench: Bench, make_engine: Callable[[], tuple[Any, StepRecorder]]) -> dict[str, Any]:
    from qwen3_tts_serving.engine.host_sync import ENGINE_READS, HostSyncGuard

    plan = bench.plan
    on_gpu = plan.device.startswith("cuda")
    engine, recorder = make_engine()
    box_end = time.monotonic() + plan.batch_box_s
    sinks = [TimelineSink() for _ in range(plan.sync_batch)]
    engine.submit(bench.streams(engine, sinks, plan.warmup_steps + plan.sync_steps + 8))
    _warm_up(engine, recorder, sinks, plan.warmup_steps, box_end)
    bench.synchronize()
    # Off the GPU the guard stands in for the sync debug mode (the designed reads allowed, as on a GPU
    # where they wait on events, which the mode does not flag).
    strict = cuda_sync_errors if on_gpu else functools.partial(HostSyncGuard, ENGINE_READS)
    # Last use of this engine: an error raised inside a step may leave it half-stepped.
    return {
        "batch": plan.sync_batch,
        "check": "set_sync_debug_mode" if on_gpu else "HostSyncGuard",
        **check_host_syncs(engine.step, plan.sync_steps, strict),
    }


def run_kernel_profile(
    bench: Bench, engine: Any, recorder: StepRecorder, batch: int, out_dir: Path
) -> dict[str, Any]:
    """``batch`` streams, warmed up, then ``kernel_steps`` steps under torch.profiler (benchmarks.kernels)."""
    plan = bench.plan
    box_end = time.monotonic() + plan.batch_box_s
    sinks = [TimelineSink() for _ in range(batch)]
    engine.submit(bench.streams(engine, sinks, plan.warmup_steps + plan.kernel_steps + 8))
    try:
        _warm_up(engine, recorder, sinks, plan.warmup_steps, box_end)
        out_dir.mkdir(parents=True, exist_ok=True)
        profiled = profile_steps(
            engine.step,
            plan.kernel_steps,
            on_gpu=plan.device.startswith("cuda"),
            synchronize=bench.synchronize,
            trace_path=out_dir / f"kernels-B{batch}.trace.json.gz",
        )
    finally:
        _settle(engine, sinks)
    return {"batch": batch, **profiled}


def run_graph_check(bench: Bench, streams: int = 4, frames: int = 24) -> dict[str, Any]:
    """The same greedy streams on a graph-captured engine and on an eager one: their audio must agree."""
    from qwen3_tts_serving.engine.config import EngineConfig
    from qwen3_tts_serving.engine.engine import StreamingEngine
    from qwen3_tts_serving.engine.requests import Capability, SynthesisRequest
    from qwen3_tts_serving.engine.streams import CollectingSink

    audio: dict[str, list[Any]] = {}
    graphed: dict[str, bool] = {}
    decoder_graphed: dict[str, bool] = {}
    for mode in ("auto", "off"):
        parameters = {**bench.engine_parameters, "max_active_streams": str(streams), "cuda_graphs": mode}
        engine = StreamingEngine(bench.tts, Capability.CUSTOM_VOICE, EngineConfig.from_parameters(parameters))
        sinks = [CollectingSink() for _ in range(streams)]
        requests = [
            SynthesisRequest(
                capability=Capability.CUSTOM_VOICE,
                text=LONG_TEXTS[index % len(LONG_TEXTS)],
                speaker=SPEAKER,
                language=LANGUAGE,
                sampling={"do_sample": False, "max_new_tokens": frames},
            )
            for index in range(streams)
        ]
        engine.submit(
            [engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)]
        )
        engine.run_until_idle()
        failed = [str(sink.error) for sink in sinks if sink.error is not None]
        if failed:
            return {"status": "fail", "mode": mode, "message": failed[0]}
        graphed[mode] = engine.frame_step.graphed
        decoder_graphed[mode] = engine.decoder.graphed
        audio[mode] = [sink.audio() for sink in sinks]
        del engine
        _release_memory()
    result = {
        "graphed": graphed["auto"],
        "decoder_graphed": decoder_graphed["auto"],
        "streams": streams,
        "frames": frames,
        **compare_audio(audio["auto"], audio["off"]),
    }
    if bench.plan.device.startswith("cuda") and not graphed["auto"]:
        # With cuda_graphs=auto a capture error is logged and the engine runs eagerly: every figure after
        # this would time the eager step, so the run says so at its top.
        result["status"] = "fail"
        result["not_captured"] = "the frame step was not captured on the GPU (its error is in the log)"
    return result


def compare_audio(
    ours: Sequence[Any], reference: Sequence[Any], atol: float = GRAPH_AUDIO_ATOL
) -> dict[str, Any]:
    """Stream by stream: same length, and no sample further apart than ``atol`` (an empty stream fails)."""
    import numpy as np

    diffs = [
        float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else float("inf")
        for a, b in zip(ours, reference, strict=True)
    ]
    return {"status": "pass" if max(diffs) <= atol else "fail", "max_abs_diff": max(diffs), "atol": atol}


# ---------------------------------------------------------------------------------------------- run
def default_checkpoints(plan: Plan) -> Path:
    """``.cache/checkpoints/<preset>`` for CPU builds (what ``make checkpoints`` and the tests use), with a
    ``-cuda`` suffix for GPU builds: their weights differ, and neither should replace the other."""
    suffix = "" if plan.device == "cpu" else "-" + plan.device.split(":")[0]
    return PROJECT_ROOT / ".cache" / "checkpoints" / f"{plan.preset}{suffix}"


@dataclass
class Run:
    """The results as they grow, written after every section."""

    out_dir: Path
    results: dict[str, Any] = field(default_factory=dict)

    def write(self) -> None:
        sections = {
            "batches": self.results.get("batches", {}).get("levels", {}),
            "load": self.results.get("load", {}).get("levels", {}),
        }
        meta = self.results.get("meta", {})
        self.results["targets"] = targets.evaluate_engine(sections, meta.get("full_model_on_gpu", False))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "results.json").write_text(
            json.dumps(_jsonable(self.results), indent=2, default=str) + "\n"
        )
        (self.out_dir / "results.md").write_text(markdown(self.results) + "\n")

    def section(
        self,
        name: str,
        body: Callable[[], dict[str, Any]],
        skip: Sequence[str],
        budget: Budget,
        need_s: float,
    ) -> None:
        """Run one section into ``results[name]``; a skipped, out-of-time or failed section says so there
        and the run goes on."""
        started = time.monotonic()
        result: dict[str, Any] = {}
        if name in skip:
            result["skipped"] = "skipped by --skip"
        elif budget.left() < need_s:
            result["skipped"] = f"out of time ({budget.left():.0f} s left, {need_s:.0f} s needed)"
        else:
            logger.info("%s (%.0f s of the budget left)", name, budget.left())
            try:
                result = body()
            except Exception as error:
                result = {"error": f"{type(error).__name__}: {error}"}
                logger.warning("%s failed: %s", name, error, exc_info=logger.isEnabledFor(logging.DEBUG))
        if "skipped" in result:
            logger.info("%s: %s", name, result["skipped"])
        self.results[name] = {**result, "section_s": time.monotonic() - started}
        self.write()


def _levels(
    sizes: Sequence[int], run_one: Callable[[int], dict[str, Any]], budget: Budget, need_s: float, label: str
) -> dict[str, Any]:
    """Run each level while the budget allows; a failed level is reported and the next one still runs.
    ``label`` names a level in the log, e.g. ``"batch {}"``."""
    levels: dict[int, Any] = {}
    missing: dict[int, str] = {}
    for size in sizes:
        if budget.left() < need_s:
            missing[size] = f"out of time ({budget.left():.0f} s left, {need_s:.0f} s needed)"
            continue
        try:
            levels[size] = run_one(size)
        except Exception as error:
            missing[size] = f"{type(error).__name__}: {error}"
            debug = logger.isEnabledFor(logging.DEBUG)
            logger.warning("%s failed: %s", label.format(size), error, exc_info=debug)
            continue
        logger.info("%s: %s", label.format(size), _level_line(levels[size]))
    return {"levels": levels, "missing": missing}


def _level_line(level: Mapping[str, Any]) -> str:
    if "ms_per_step" in level:
        return f"{_f(level['ms_per_step'], 1)} ms/step, {_f(level['audio_s_per_s'], 1)} audio-s/s"
    if "ms_per_frame" in level:
        return f"{_f(level['elapsed_s'])} s for {_f(level['audio_s'])} s of audio"
    ttfa = level["ttfa_s"]
    return (
        f"first audio p50 {_f(ttfa['p50'], 0, 1000)} / p95 {_f(ttfa['p95'], 0, 1000)} ms, "
        f"{_f(level['audio_s_per_s'], 1)} audio-s/s, {level['streams_with_underruns']} of {level['ok']} "
        f"streams underran"
    )


def _release_memory() -> None:
    """Give an engine's memory back (its caches, captured graphs) before the next one is built."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(plan: Plan, args: argparse.Namespace) -> Run:
    import torch

    from qwen3_tts_serving.checkpoints import ensure_checkpoints
    from qwen3_tts_serving.engine.config import EngineConfig
    from qwen3_tts_serving.engine.loading import load_model
    from qwen3_tts_serving.engine.requests import Capability

    budget = Budget(plan.budget_s)
    out = Run(args.out)
    cuda = plan.device.startswith("cuda")
    if cuda:
        # This thread's synchronisations, device name and cache calls take the current device: make it the
        # benchmarked one (``--device cuda:1`` would otherwise time GPU 0).
        torch.cuda.set_device(cuda_index(plan.device, torch.cuda.current_device))
        if "kernels" not in args.skip:
            # The profiler sees the kernels of CUDA graphs captured before its first use only once it was
            # initialised before them (pytorch#75504): every engine captures its graphs long before the
            # kernels section runs.
            from torch.profiler._utils import _init_for_cuda_graphs

            _init_for_cuda_graphs()
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "gpu",
        "plan": dataclasses.asdict(plan),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "full_model_on_gpu": cuda and plan.preset == "full-1.7b",
        "commit": sysinfo.commit(),
        "versions": sysinfo.versions(),
        "machine": sysinfo.machine(),
    }
    out.results["meta"] = meta

    started = time.monotonic()
    root = args.checkpoints or default_checkpoints(plan)
    if args.no_build:
        checkpoint = root / FLAVOUR
    else:
        checkpoint = ensure_checkpoints(root, plan.preset, args.seed, flavours=[FLAVOUR], device=plan.device)[
            FLAVOUR
        ]
    meta["checkpoint"] = str(checkpoint)
    meta["checkpoint_s"] = time.monotonic() - started
    logger.info("checkpoint %s ready in %.1f s", checkpoint, meta["checkpoint_s"])

    parameters = {
        "checkpoint_dir": str(checkpoint),
        "device": plan.device,
        "repetition_window": "0",  # lengths set by max_new_tokens and the texts, run after run
        # Every stream admitted at once, however long a step takes: a fixed batch must fill (a step over the
        # 70 ms default would hold newcomers back and leave B = 128 waiting out its box), and the load
        # levels measure what the engine does with c streams, not how the guard spaces them.
        "realtime_step_budget_s": "0",
        **({"cpu_threads": "1"} if not cuda else {}),
        **dict(args.engine_param),
    }
    started = time.monotonic()
    tts = load_model(EngineConfig.from_parameters(parameters), Capability.CUSTOM_VOICE)
    meta["load_s"] = time.monotonic() - started
    meta["dtype"] = str(next(tts.model.parameters()).dtype)
    meta["attn_implementation"] = getattr(tts.model.config, "_attn_implementation", None)
    meta["gpu"] = torch.cuda.get_device_name() if cuda else None
    speech_tokenizer = tts.model.speech_tokenizer
    frame_s = speech_tokenizer.get_decode_upsample_rate() / speech_tokenizer.get_output_sample_rate()
    bench = Bench(tts, plan, parameters, frame_s, synchronize, seed=args.seed)
    meta["engine_parameters"] = parameters
    logger.info("model loaded in %.1f s (%s, %s)", meta["load_s"], meta["dtype"], meta["gpu"] or plan.device)

    meta["engine_config"] = dataclasses.asdict(bench.engine_config(plan.max_streams))
    out.write()

    out.section("graphs", lambda: run_graph_check(bench), args.skip, budget, plan.reserve_s / 2)

    def sync_check() -> dict[str, Any]:
        # Early and on a small engine of its own: it is the check the run is for, and a slow run (graphs that
        # failed to capture, a slower GPU) must not leave it no time at the end.
        held: dict[str, Any] = {}

        def sync_engine() -> tuple[Any, StepRecorder]:
            held["recorder"] = StepRecorder()
            held["engine"] = bench.engine(held["recorder"], plan.sync_batch)
            return held["engine"], held["recorder"]

        try:
            return run_sync_check(bench, sync_engine)
        finally:
            held.clear()  # an error inside a step may have left it half-stepped: nothing else uses it
            _release_memory()

    out.section("sync", sync_check, args.skip, budget, plan.batch_box_s / 2)

    # The first engine: driven step by step for the fixed batches, then on its own thread for the load.
    first: dict[str, Any] = {}

    def first_engine() -> tuple[Any, StepRecorder]:
        if "engine" not in first:
            started = time.monotonic()
            first["recorder"] = StepRecorder()
            first["engine"] = bench.engine(first["recorder"], plan.max_streams)
            meta["engine_start_s"] = time.monotonic() - started
        return first["engine"], first["recorder"]

    def batches() -> dict[str, Any]:
        engine, recorder = first_engine()
        run_one = functools.partial(measure_batch, bench, engine, recorder)
        return _levels(plan.batches, run_one, budget, batch_need, "batch {}")

    def load() -> dict[str, Any]:
        engine, recorder = first_engine()
        engine.start()
        try:
            run_one = functools.partial(run_load_level, bench, engine, recorder)
            return _levels(plan.concurrency, run_one, budget, load_need, "c={}")
        finally:
            engine.stop()

    batch_need = plan.batch_box_s + plan.reserve_s
    out.section("batches", batches, args.skip, budget, batch_need)
    load_need = plan.window_s + plan.drain_s + 10.0 + plan.reserve_s
    out.section("load", load, args.skip, budget, load_need)
    first.clear()  # its memory goes back before the second engine is built
    _release_memory()

    def baseline() -> dict[str, Any]:
        bench.tts.generate_custom_voice(text="Hello.", speaker=SPEAKER, language=LANGUAGE, max_new_tokens=2)
        return _levels(
            plan.baseline_batches, lambda b: run_baseline(bench, b), budget, plan.reserve_s / 3, "baseline {}"
        )

    out.section("baseline", baseline, args.skip, budget, plan.reserve_s / 2)

    # A second engine, driven step by step: timers go around its stages.
    second: dict[str, Any] = {}

    def second_engine() -> tuple[Any, StepRecorder]:
        if "engine" not in second:
            second["recorder"] = StepRecorder()
            second["engine"] = bench.engine(second["recorder"], max(plan.breakdown_batches))
        return second["engine"], second["recorder"]

    timing = _Synchronizing(synchronize)

    def stage_breakdown() -> dict[str, Any]:
        engine, recorder = second_engine()
        timers = StageTimers(synchronize=timing)
        instrument(engine, timers)
        return {"levels": run_breakdown(bench, engine, recorder, timers)}

    out.section("breakdown", stage_breakdown, args.skip, budget, 2 * plan.batch_box_s / 3)
    timing.on = False

    def kernel_profile() -> dict[str, Any]:
        # A fresh engine: no stage timers around this one's stages.
        second.clear()
        _release_memory()
        batch = max(plan.breakdown_batches)
        recorder = StepRecorder()
        return run_kernel_profile(bench, bench.engine(recorder, batch), recorder, batch, out.out_dir)

    out.section("kernels", kernel_profile, args.skip, budget, plan.batch_box_s)
    return out


def cuda_index(device: str, current: Callable[[], int]) -> int:
    """The GPU index of ``device``: ``cuda:1`` is 1, a bare ``cuda`` the current device. torch.cuda.set_device
    refuses a device without an index ("Expected a torch.device with a specified index"), and ``cuda`` is the
    default: the first GPU run would have ended there."""
    import torch

    index = torch.device(device).index
    return current() if index is None else index


# ---------------------------------------------------------------------------------------------- report
def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return path


def _section_note(section: Mapping[str, Any]) -> list[str]:
    if "skipped" in section:
        return [f"Skipped: {section['skipped']}."]
    if "error" in section:
        return [f"Failed: {section['error']}."]
    return [f"Level {k}: {v}." for k, v in section.get("missing", {}).items()]


def _batches_table(section: Mapping[str, Any]) -> list[str]:
    lines = [
        "| B | ms per step | host ms p50 / p95 | audio-s/s | mean batch | steps "
        "| device ops per step p50 / max |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch, level in section.get("levels", {}).items():
        lines.append(
            f"| {batch} | {_f(level['ms_per_step'], 1)} | {_f(level['host_ms_p50'], 1)} / "
            f"{_f(level['host_ms_p95'], 1)} | {_f(level['audio_s_per_s'], 1)} | "
            f"{_f(level['mean_batch'], 1)} | {level['steps']} | "
            f"{_f(level.get('ops_p50'), 0)} / {_f(level.get('ops_max'), 0)} |"
        )
    return lines


def _load_table(section: Mapping[str, Any]) -> list[str]:
    lines = [
        "| c | streams ok / cut / failed | first audio p50 / p95 ms | RTF p50 / max | streams that underran "
        "| audio-s/s | engine ms/step, mean batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for concurrency, level in section.get("levels", {}).items():
        ttfa, rtf = level["ttfa_s"], level["rtf"]
        lines.append(
            f"| {concurrency} | {level['ok']} / {level['cut']} / {level['errors'] - level['cut']} | "
            f"{_f(ttfa['p50'], 1, 1000)} / {_f(ttfa['p95'], 1, 1000)} | "
            f"{_f(rtf['p50'])} / {_f(rtf['max'])} | "
            f"{level['streams_with_underruns']} of {level['ok']} | {_f(level['audio_s_per_s'], 1)} | "
            f"{_f(level['engine_ms_per_step'], 1)}, {_f(level['mean_batch'], 1)} |"
        )
    return lines


def _baseline_table(section: Mapping[str, Any]) -> list[str]:
    lines = ["| batch | seconds | audio s | audio-s/s | ms per frame | RTF |", "|---|---|---|---|---|---|"]
    for batch, level in section.get("levels", {}).items():
        lines.append(
            f"| {batch} | {_f(level['elapsed_s'])} | {_f(level['audio_s'])} | {_f(level['audio_s_per_s'])} | "
            f"{_f(level['ms_per_frame'], 1)} | {_f(level['rtf'])} |"
        )
    return lines


def _breakdown_table(section: Mapping[str, Any]) -> list[str]:
    runs = section.get("levels", {})
    if not runs:
        return []
    batches = list(runs)
    lines = [
        "| stage | " + " | ".join(f"B={b} ms/step" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    stages = list(next(iter(runs.values()))["stages"])
    for stage in stages:
        cells = [_f(runs[b]["stages"][stage]["ms_per_step"]) for b in batches]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| step (synchronised) | " + " | ".join(_f(runs[b]["ms_per_step"]) for b in batches) + " |")
    return lines


def _sync_lines(section: Mapping[str, Any]) -> list[str]:
    status = section.get("status")
    if status == "pass":
        checked = " (CPU: HostSyncGuard)" if section.get("check") == "HostSyncGuard" else ""
        return [
            f"PASS: {section['steps']} steady-state steps at B={section['batch']}, no host "
            f"synchronisation{checked}."
        ]
    if status == "fail":
        return [
            f"FAIL at step {section['failed_at_step']} of {section['steps']} (B={section['batch']}): "
            f"{section['message']}",
            f"First offending operation: `{section['code']}` at {section['where']}.",
        ]
    if status == "skipped":
        return [f"Skipped: {section['reason']}."]
    return []


def _graph_lines(section: Mapping[str, Any]) -> list[str]:
    if section.get("status") == "fail" and "message" in section:
        return [f"FAIL: a stream failed on the {section['mode']} engine: {section['message']}"]
    where = "CUDA graphs" if section.get("graphed") else "eagerly (no graphs captured)"
    decoder = "in CUDA graphs" if section.get("decoder_graphed") else "eagerly"
    not_captured = [f"FAIL: {section['not_captured']}."] if "not_captured" in section else []
    return [
        *not_captured,
        f"{str(section.get('status')).upper()}: {section.get('streams')} greedy streams of "
        f"{section.get('frames')} frames, frame step run {where} vs eagerly: largest audio difference "
        f"{_f(section.get('max_abs_diff'), 6)} (tolerance {section.get('atol')}); "
        f"codec decoder run {decoder}.",
    ]


def _target_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| target | value | status |", "|---|---|---|"]
    for row in rows:
        value = row["value"]
        if value is not None and "first audio" in row["target"]:
            shown = f"{value * 1000:.1f} ms"
        elif value is not None and "ms" in row["target"]:
            shown = f"{value:.1f} ms"
        else:
            shown = _f(value, 1)
        lines.append(f"| {row['target']} | {shown} | {row['status']} |")
    return lines


TITLES = {
    "graphs": ("Graphed frame step == eager frame step (greedy audio)", _graph_lines),
    "batches": ("Fixed batches (B streams together, steady-state steps)", _batches_table),
    "load": ("Closed-loop load (c workers back to back; first audio = submit to first chunk)", _load_table),
    "baseline": ("The package's own generate_custom_voice (non-streaming)", _baseline_table),
    "breakdown": ("Stage times per step (synchronising timers, ms)", _breakdown_table),
    "sync": ('Host synchronisation in a steady-state step (set_sync_debug_mode("error"))', _sync_lines),
    "kernels": ("Where a steady-state step goes (torch.profiler)", kernels_lines),
}


def markdown(results: Mapping[str, Any]) -> str:
    meta = results.get("meta", {})
    lines = [
        "# Engine benchmark, in-process",
        "",
        f"{meta.get('gpu') or meta.get('plan', {}).get('device')}, {meta.get('plan', {}).get('preset')} "
        f"{FLAVOUR} ({meta.get('dtype')}, {meta.get('attn_implementation')}), commit {meta.get('commit')}, "
        f"{meta.get('started')}. Checkpoint ready in {_f(meta.get('checkpoint_s'), 1)} s, model loaded in "
        f"{_f(meta.get('load_s'), 1)} s, engine built in {_f(meta.get('engine_start_s'), 1)} s.",
    ]
    for name, (title, table) in TITLES.items():
        if name not in results:
            continue
        section = results[name]
        body = table(section) if "skipped" not in section and "error" not in section else []
        lines += ["", f"## {title}", "", *body, *_section_note(section)]
    if results.get("targets"):
        lines += ["", "## Targets (issue 15)", "", *_target_lines(results["targets"])]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLI
def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=VALUE (an EngineConfig field)")
    return key.strip(), value.strip()


def parse_args(argv: Sequence[str] | None) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_engine", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny checkpoints on the CPU, small levels")
    parser.add_argument("--out", type=Path, help="results folder (default bench-results/engine-<time>/)")
    parser.add_argument(
        "--checkpoints",
        type=Path,
        help="folder of checkpoint flavours, built there unless complete "
        "(default .cache/checkpoints/<preset>, <preset>-cuda for a GPU build)",
    )
    parser.add_argument("--no-build", action="store_true", help="use CHECKPOINTS/custom_voice as it is")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="sections not to run")
    parser.add_argument("--seed", type=int, default=0, help="stream i samples with seed + i")
    parser.add_argument(
        "--engine-param",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an EngineConfig field for the engine (repeatable), e.g. code_predictor=static",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks of failures")
    for plan_field in dataclasses.fields(Plan):
        default = getattr(GPU, plan_field.name)
        flag = "--" + plan_field.name.replace("_", "-")
        quick = getattr(QUICK, plan_field.name)
        if isinstance(default, tuple):
            shown = f"{' '.join(map(str, default))}; --quick: {' '.join(map(str, quick))}"
            parser.add_argument(flag, type=int, nargs="+", help=f"{PLAN_HELP[plan_field.name]} ({shown})")
        else:
            shown = f"{default}; --quick: {quick}"
            parser.add_argument(flag, type=type(default), help=f"{PLAN_HELP[plan_field.name]} ({shown})")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else GPU
    overrides = {
        f.name: tuple(value) if isinstance(value, list) else value
        for f in dataclasses.fields(Plan)
        if (value := getattr(args, f.name)) is not None
    }
    plan = dataclasses.replace(plan, **overrides)
    problems = [
        f"{name} must be positive"
        for name in ("batches", "concurrency", "baseline_batches")
        if any(size < 1 for size in getattr(plan, name))
    ]
    problems += [
        f"{name} must be >= 1"
        for name in ("batch_steps", "frames", "sync_batch", "sync_steps")
        if getattr(plan, name) < 1
    ]
    if problems:
        parser.error("; ".join(problems))
    args.out = args.out or PROJECT_ROOT / "bench-results" / time.strftime("engine-%Y%m%d-%H%M%S")
    return plan, args


def main(argv: Sequence[str] | None = None) -> int:
    plan, args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        out = run(plan, args)
    except (OSError, ValueError) as error:  # a bad checkpoint folder, device or engine parameter
        logger.error("%s", error)
        return 2
    except Exception as error:  # the checkpoint or the model did not come up: nothing can be measured
        logger.error("the run stopped: %s: %s", type(error).__name__, error, exc_info=args.verbose)
        return 1
    print(markdown(out.results))
    print(f"\nResults: {args.out / 'results.json'} and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
