"""The in-process engine benchmark (benchmarks.gpu_engine): its tiny CPU mode end to end with the real engine
on the tiny checkpoints, and the pieces whose arithmetic decides a target (underruns, the sync check)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import gpu_engine, kernels, targets
from benchmarks.stats import summarize_level


def _chunk(seconds: float, *, last: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        audio=np.zeros(int(seconds * 24000), dtype=np.float32),
        sample_rate=24000,
        is_last=last,
        finish_reason="stop" if last else "",
    )


def _stream(timeline: list[tuple[float, float]], submitted: float = 100.0) -> gpu_engine.TimelineSink:
    """A sink fed ``(arrival after submit, seconds of audio)`` chunks, the last one ending the stream."""
    sink = gpu_engine.TimelineSink()
    sink.submitted_at = submitted
    for number, (arrival, seconds) in enumerate(timeline):
        sink.send(_chunk(seconds, last=number == len(timeline) - 1))
        sink.timeline[-1] = (
            submitted + arrival,
            sink.timeline[-1][1],
        )  # the timeline's clock, not the test's
    return sink


def test_a_listener_who_starts_at_the_first_chunk_underruns_only_when_a_chunk_comes_late():
    # First chunk after 50 ms plays 80 ms; the next must arrive by 130 ms, and so on.
    in_time = _stream([(0.05, 0.08), (0.12, 0.08), (0.20, 0.16), (0.35, 0.32), (0.40, 0.0)])
    late = _stream([(0.05, 0.08), (0.12, 0.08), (0.30, 0.16), (0.35, 0.32), (0.40, 0.0)])  # due at 0.21
    records = [sink.record(2, i, level_started=99.0) for i, sink in enumerate((in_time, late))]
    assert [r.playback.underruns for r in records] == [0, 1]
    assert records[1].playback.stall_s == pytest.approx(0.30 - 0.21)
    assert records[0].ttfa_s == pytest.approx(0.05) and records[0].total_s == pytest.approx(0.40)
    assert records[0].start_s == pytest.approx(1.0) and records[0].audio_s == pytest.approx(0.64)
    summary = summarize_level(records, wall_s=1.0)
    assert (summary["streams_with_underruns"], summary["ok"], summary["errors"]) == (1, 2, 0)
    assert summary["rtf"]["p50"] == pytest.approx(0.40 / 0.64)


def test_cut_and_failed_streams_are_errors_and_keep_no_latency():
    cut = _stream([(0.05, 0.08)])
    cut.ended = False
    cut.cut = True
    failed = gpu_engine.TimelineSink()
    failed.submitted_at = 100.0
    failed.fail(RuntimeError("prefill failed"))
    records = [cut.record(1, 0, 100.0), failed.record(1, 1, 100.0)]
    assert records[0].error.startswith("cut:") and records[0].total_s is None
    assert records[1].error == "prefill failed" and records[1].ttfa_s is None
    assert summarize_level(records, wall_s=1.0)["errors"] == 2


def _trips_on_a_sync() -> None:
    raise RuntimeError("called a synchronizing CUDA operation")


def test_the_sync_check_reports_pass_or_the_first_offending_call_and_always_restores_the_mode():
    modes: list[str] = []

    @contextmanager
    def strict() -> Iterator[None]:  # stands in for the sync debug mode
        modes.append("error")
        try:
            yield
        finally:
            modes.append("reset")

    steps: list[int] = []
    passed = gpu_engine.check_host_syncs(lambda: steps.append(1), 3, strict)
    assert passed == {"status": "pass", "steps": 3} and len(steps) == 3 and modes == ["error", "reset"]

    calls = iter([None, None])

    def step() -> None:
        if next(calls, "sync") == "sync":
            _trips_on_a_sync()

    modes.clear()
    failed = gpu_engine.check_host_syncs(step, 5, strict)
    assert modes == ["error", "reset"]
    assert failed["status"] == "fail" and failed["failed_at_step"] == 3  # the third step tripped
    assert failed["message"] == "called a synchronizing CUDA operation"
    assert (
        failed["where"].startswith("tests/bench/test_gpu_engine.py:")
        and "_trips_on_a_sync" in failed["where"]
    )
    assert failed["code"] == 'raise RuntimeError("called a synchronizing CUDA operation")'
    report = gpu_engine.markdown({"sync": {**failed, "batch": 8}})
    assert "FAIL at step 3 of 5 (B=8): called a synchronizing CUDA operation" in report
    assert f"First offending operation: `{failed['code']}` at {failed['where']}." in report
    assert "PASS: 3 steady-state steps at B=8" in gpu_engine.markdown({"sync": {**passed, "batch": 8}})


def test_engine_targets_pass_or_fail_only_on_a_gpu_run_of_the_full_model():
    batches = {1: {"ms_per_step": 7.5}, 64: {"ms_per_step": 12.5}, 128: {"ms_per_step": 15.0}}
    load = {
        c: {"ttfa_s": {"p50": 0.02, "p95": 0.07}, "audio_s_per_s": 5.0 * c, "streams_with_underruns": 0}
        for c in (1, 8, 16, 32, 64)
    }
    load[8]["streams_with_underruns"] = 1
    rows = {r["target"]: r for r in targets.evaluate_engine({"batches": batches, "load": load}, True)}
    assert rows["frame step <= 8 ms at batch 1"]["status"] == "PASS"
    assert rows["frame step <= 12 ms at batch 64"]["status"] == "FAIL"
    assert rows["frame step <= 16 ms at batch 128"]["status"] == "PASS"
    assert rows["first audio p95 <= 80 ms at c=64"]["status"] == "PASS"
    assert rows[">= 400 audio-s/s at c=64"]["status"] == "FAIL"  # 5 * 64 = 320
    assert rows[">= 600 audio-s/s at c=128"]["status"] == targets.NOT_RUN
    underruns = rows["no stream underruns at c <= 64"]
    assert (underruns["value"], underruns["status"]) == (1, "FAIL")  # the worst level up to 64 counts
    assert {r["status"] for r in targets.evaluate_engine({"batches": batches}, False)} == {
        targets.NOT_MEASURED
    }


def test_tiny_cpu_run_end_to_end_writes_every_section_with_sane_figures(
    tiny_checkpoints: Path, tmp_path: Path
):
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--checkpoints", str(tiny_checkpoints), "--no-build"]
    argv += ["--batches", "1", "2", "--concurrency", "1", "2", "--window-s", "1"]
    assert gpu_engine.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    markdown = (out / "results.md").read_text()
    for section in gpu_engine.SECTIONS:
        assert "error" not in results[section] and "skipped" not in results[section], section
        assert results[section].get("missing", {}) == {}, section

    graphs = results["graphs"]
    assert graphs["status"] == "pass" and graphs["graphed"] is False  # a CPU runs the step eagerly
    assert graphs["max_abs_diff"] <= graphs["atol"]
    assert "Graphed frame step == eager frame step" in markdown

    batches = results["batches"]["levels"]
    assert set(batches) == {"1", "2"}
    for batch, level in batches.items():
        assert level["steps"] == 4 and level["mean_batch"] == pytest.approx(int(batch))
        assert level["ms_per_step"] > 0 and level["audio_s_per_s"] > 0
        assert 0 < level["host_ms_p50"] <= level["host_ms_p95"]
        # B frames of 80 ms in each step:
        assert level["audio_s_per_s"] == pytest.approx(int(batch) * 0.08 * 1000 / level["ms_per_step"])
        assert len(level["ops_per_step"]) == 4 and level["ops_max"] == max(level["ops_per_step"]) > 0
    # Batching is real: two streams cost the host the same device operations per step as one.
    assert batches["1"]["ops_per_step"] == batches["2"]["ops_per_step"]

    load = results["load"]["levels"]
    assert set(load) == {"1", "2"}
    for concurrency, level in load.items():
        assert level["errors"] == 0 and level["cut"] == 0 and level["ok"] >= int(concurrency)
        assert 0 < level["ttfa_s"]["p50"] <= level["ttfa_s"]["p95"] <= level["ttfa_s"]["p99"]
        assert level["rtf"]["p50"] > 0 and level["audio_s_per_s"] > 0
        assert 0 <= level["streams_with_underruns"] <= level["ok"]
        assert level["finish_reasons"] == {"length": level["ok"]}  # 8 frames each, as asked
        assert level["audio_s"] == pytest.approx(level["ok"] * 8 * 0.08)
        assert level["engine_steps"] > 0 and 0 < level["mean_batch"] <= int(concurrency)

    baseline = results["baseline"]["levels"]["1"]
    assert baseline["elapsed_s"] > 0 and 0 < baseline["audio_s"] <= 4 * 0.08 + 1e-9

    stages = results["breakdown"]["levels"]
    assert set(stages) == {"1", "2"}
    for run in stages.values():
        assert run["steps"] == 3 and run["ms_per_step"] > 0
        assert {"talker", "code_predictor", "decoder", "sampling", "python"} <= set(run["stages"])
        assert sum(stage["share"] for stage in run["stages"].values()) == pytest.approx(1.0)

    # On the CPU the guard stands in for the sync debug mode: the steady state reads the host only where
    # designed.
    assert results["sync"]["status"] == "pass" and results["sync"]["check"] == "HostSyncGuard"
    # The profiled steps on a fresh engine at the largest B: host operations only on a CPU, and the trace.
    profiled = results["kernels"]
    assert profiled["batch"] == 2 and profiled["steps"] == 2 and profiled["wall_ms_per_step"] > 0
    assert profiled["kernels_per_step"] == 0 and profiled["top_kernels"] == []
    assert profiled["top_host_ops"] and all(row["cpu_ms_per_step"] >= 0 for row in profiled["top_host_ops"])
    assert "aten::mm" in {row["name"] for row in profiled["top_host_ops"]}
    with gzip.open(out / profiled["trace"]) as trace:
        assert json.load(trace)["traceEvents"]
    assert {r["status"] for r in results["targets"]} == {targets.NOT_MEASURED}
    assert results["meta"]["plan"]["preset"] == "tiny" and results["meta"]["load_s"] > 0
    for title in (
        "## Fixed batches",
        "## Closed-loop load",
        "## The package's own",
        "## Stage times",
        "## Where a steady-state step goes",
        "## Targets",
    ):
        assert title in markdown


def test_sections_are_skipped_by_flag_and_bad_levels_are_refused(tiny_checkpoints: Path, tmp_path: Path):
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--checkpoints", str(tiny_checkpoints), "--no-build"]
    assert gpu_engine.main([*argv, "--skip", *gpu_engine.SECTIONS]) == 0
    results = json.loads((out / "results.json").read_text())
    assert all(results[s]["skipped"] == "skipped by --skip" for s in gpu_engine.SECTIONS)
    with pytest.raises(SystemExit):
        gpu_engine.parse_args(["--quick", "--batches", "0"])
    with pytest.raises(SystemExit):
        gpu_engine.parse_args(["--skip", "everything"])


def test_graph_check_fails_on_any_difference_beyond_bf16_noise():
    same = [np.ones(4, np.float32), np.zeros(3, np.float32) + 0.5]
    assert gpu_engine.compare_audio(same, [a + 4e-3 for a in same])["status"] == "pass"  # a bf16 step
    assert gpu_engine.compare_audio(same, [same[0], same[1] + 0.02])["status"] == "fail"
    assert gpu_engine.compare_audio(same, [same[0], same[1][:2]])["status"] == "fail"  # a shorter stream
    assert gpu_engine.compare_audio([np.zeros(0)], [np.zeros(0)])["status"] == "fail"  # no audio at all


@dataclass
class _ProfiledEvent:
    """What benchmarks.kernels reads of a torch.profiler key average."""

    key: str
    count: int
    self_cpu_time_total: float  # microseconds
    self_device_time_total: float
    device_type: str


def test_the_kernel_summary_splits_device_time_from_host_calls_per_step():
    steps = 4
    events = [
        _ProfiledEvent("gemm_bf16", 4 * 56, 0.0, 4 * 3000.0, "DeviceType.CUDA"),
        _ProfiledEvent("flash_fwd", 4 * 28, 0.0, 4 * 1000.0, "DeviceType.CUDA"),
        _ProfiledEvent("cudaGraphLaunch", 4 * 2, 4 * 40.0, 0.0, "DeviceType.CPU"),
        _ProfiledEvent("cudaLaunchKernel", 4 * 30, 4 * 150.0, 0.0, "DeviceType.CPU"),
        _ProfiledEvent("aten::copy_", 4 * 3, 4 * 60.0, 4 * 20.0, "DeviceType.CPU"),
    ]
    summary = kernels.summarise(events, steps, wall_s=steps * 0.010)
    assert summary["wall_ms_per_step"] == pytest.approx(10.0)
    # Only the kernels' own time is the device's: the CPU op's share of a kernel is not counted twice.
    assert summary["device_busy_ms_per_step"] == pytest.approx(4.0)
    assert summary["kernels_per_step"] == pytest.approx(84)
    assert [row["name"] for row in summary["top_kernels"]] == ["gemm_bf16", "flash_fwd"]
    assert summary["top_kernels"][0]["device_ms_per_step"] == pytest.approx(3.0)
    assert summary["runtime_calls_per_step"]["cudaGraphLaunch"] == 2
    assert summary["runtime_calls_per_step"]["cudaLaunchKernel"] == 30
    assert summary["runtime_calls_per_step"]["cudaStreamSynchronize"] == 0
    assert summary["top_host_ops"][0]["name"] == "cudaLaunchKernel"
    lines = "\n".join(kernels.kernels_lines({"batch": 64, **summary}))
    assert "device busy 4.00 ms, 84 kernels per step" in lines and "cudaGraphLaunch 2.0" in lines


def test_the_benchmarked_gpu_is_set_by_its_index() -> None:
    """torch.cuda.set_device refuses a device without an index, and the benchmark's default device is a bare
    ``cuda``: the first GPU run ended there (rc 2, no results). set_device's own check accepts the index."""
    import torch
    from torch.cuda._utils import _get_device_index

    from benchmarks.gpu_engine import cuda_index

    with pytest.raises(ValueError, match="specified index"):
        _get_device_index(torch.device("cuda"), optional=False)  # what set_device did with "cuda"
    assert _get_device_index(cuda_index("cuda", lambda: 3), optional=False) == 3
    assert cuda_index("cuda:1", lambda: 0) == 1


def test_a_gpu_run_whose_frame_step_was_not_captured_says_so_first() -> None:
    """With cuda_graphs=auto a capture error only logs a warning and the engine runs eagerly: the report
    must not read as a graph run that merely missed its targets."""
    from benchmarks import gpu_engine

    section = {
        "status": "fail",
        "graphed": False,
        "decoder_graphed": True,
        "streams": 4,
        "frames": 24,
        "max_abs_diff": 0.0,
        "atol": gpu_engine.GRAPH_AUDIO_ATOL,
        "not_captured": "the frame step was not captured on the GPU (its error is in the log)",
    }
    report = gpu_engine.markdown({"graphs": section})
    assert "FAIL: the frame step was not captured on the GPU (its error is in the log)." in report
    assert (
        "frame step run eagerly (no graphs captured)" in report
        and "codec decoder run in CUDA graphs" in report
    )
