"""The benchmark tooling: its arithmetic, the load tool on a fake target, the profile and the prompt-stall
tool on the tiny engine. The load and voice-agent tools against the real stack are tested in
tests/e2e/test_benchmark_tools.py."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import numpy as np
import pytest

from benchmarks import cpu, perf, report, stats, targets, tritonstats
from benchmarks.agent import fragments
from benchmarks.load import Chunk, LoadError, run_level
from benchmarks.stack import models_to_serve
from benchmarks.texts import SHORT_TEXTS, jobs, requests_per_level
from qwen3_tts_serving.settings import Settings


# ------------------------------------------------------------------------------------------ percentiles
@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 25, 1.75),
        ([7.0], 99, 7.0),
        ([10.0, 20.0], 90, 19.0),
    ],
)
def test_percentile_interpolates_between_ranks(values, q, expected):
    assert stats.percentile(values, q) == pytest.approx(expected)


def test_percentile_matches_numpy_and_handles_edges():
    rng = np.random.default_rng(3)
    values = rng.exponential(size=37).tolist()
    for q in (1, 50, 90, 95, 99):
        assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


# ------------------------------------------------------------------------------------------ underruns
def test_chunks_ahead_of_playback_never_underrun():
    # 0.32 s chunks every 0.1 s: the buffer only grows.
    arrivals = [0.1 * i for i in range(6)]
    assert stats.playback_underruns(arrivals, [0.32] * 6) == stats.Playback(0, 0.0)


def test_a_late_chunk_is_one_underrun_and_playback_resumes_from_its_arrival():
    # Playback starts at 1.0; 0.5 s of audio lasts until 1.5; the next chunk comes at 2.0 (0.5 s gap),
    # plays until 2.5; the third arrives at 2.4, in time.
    playback = stats.playback_underruns([1.0, 2.0, 2.4], [0.5, 0.5, 0.5])
    assert playback.underruns == 1
    assert playback.stall_s == pytest.approx(0.5)


def test_every_gap_counts_and_stalls_add_up():
    playback = stats.playback_underruns([0.0, 1.0, 3.0, 3.1], [0.2, 0.2, 0.2, 0.2])
    assert playback.underruns == 2
    assert playback.stall_s == pytest.approx((1.0 - 0.2) + (3.0 - 1.2))


def test_prebuffer_absorbs_gaps_and_empty_chunks_never_underrun():
    assert stats.playback_underruns([0.0, 0.7], [0.5, 0.5], prebuffer_s=0.3).underruns == 0
    assert stats.playback_underruns([0.0, 0.7], [0.5, 0.5]).underruns == 1
    # the closing chunk without audio arrives late: nothing audible is missing
    assert stats.playback_underruns([0.0, 0.1, 5.0], [0.5, 0.5, 0.0]).underruns == 0
    assert stats.playback_underruns([], []).underruns == 0
    with pytest.raises(ValueError):
        stats.playback_underruns([0.0], [])


# ------------------------------------------------------------------------------------------ summaries
def _record(index: int, ttfa: float | None, total: float | None, audio: float, error: str | None = None):
    record = stats.RequestRecord(path="triton", concurrency=2, index=index, start_s=0.0)
    record.ttfa_s, record.total_s, record.audio_s, record.error = ttfa, total, audio, error
    if ttfa is not None:
        record.arrivals_s, record.durations_s = [ttfa], [audio]
    return record


def test_summarize_level_counts_errors_and_computes_rtf_and_throughput():
    records = [_record(0, 0.1, 1.0, 2.0), _record(1, 0.3, 3.0, 2.0), _record(2, None, None, 0.0, "boom")]
    summary = stats.summarize_level(records, wall_s=4.0)
    assert (summary["requests"], summary["ok"], summary["errors"]) == (3, 2, 1)
    assert summary["error_messages"] == ["boom"]
    assert summary["ttfa_s"]["p50"] == pytest.approx(0.2)
    assert summary["rtf"] == {"p50": pytest.approx(1.0), "max": pytest.approx(1.5)}
    assert summary["audio_s_per_s"] == pytest.approx(1.0)
    assert summary["requests_per_s"] == pytest.approx(0.5)


def test_cpu_figures():
    figures = stats.cpu_figures({"triton": 2.0, "gateway": 0.05}, audio_s=6.0, requests=5)
    assert figures["audio_s_per_triton_cpu_s"] == pytest.approx(3.0)
    assert figures["gateway_cpu_ms_per_request"] == pytest.approx(10.0)
    assert stats.cpu_figures({"triton": None}, 6.0, 5)["audio_s_per_triton_cpu_s"] is None


def _session(index: int, first: float | None, last: float, end: float | None, error: str | None = None):
    record = stats.SessionRecord(concurrency=2, index=index, start_s=0.0, words=4, last_fragment_s=last)
    record.first_audio_s, record.end_s, record.error = first, end, error
    if first is not None and end is not None:
        # one chunk at first audio, one at the end: 0.2 s each, so a gap after the first is an underrun
        record.arrivals_s, record.durations_s = [first, end], [0.2, 0.2]
        record.audio_s, record.chunks = 0.4, 2
    return record


def test_session_summary_times_from_the_fragments_and_counts_underruns_per_stream():
    records = [
        _session(0, 0.1, 0.5, 0.25),  # spoke before the text ended, no gap (0.25 <= 0.1 + 0.2)
        _session(1, 0.3, 0.5, 1.5),  # one underrun of 1.0 s
        _session(2, None, 0.5, None, "boom"),
    ]
    assert records[0].tail_s == pytest.approx(-0.25) and records[1].tail_s == pytest.approx(1.0)
    summary = stats.summarize_sessions(records, wall_s=2.0)
    assert (summary["sessions"], summary["ok"], summary["errors"]) == (3, 2, 1)
    assert summary["error_messages"] == ["boom"]
    assert summary["first_audio_s"] == {"p50": pytest.approx(0.2), "p90": pytest.approx(0.28)}
    assert summary["tail_s"]["p50"] == pytest.approx(0.375)
    assert summary["spoke_before_text_end"] == 2
    assert (summary["underruns"], summary["streams_with_underruns"]) == (1, 1)
    assert summary["underruns_per_stream"] == pytest.approx(0.5)
    assert summary["stall_s"] == pytest.approx(1.0)
    assert summary["audio_s"] == pytest.approx(0.8)
    assert stats.summarize_sessions([], 1.0)["underruns_per_stream"] is None
    assert records[2].to_json()["tail_s"] is None


def test_fragments_are_words_that_join_back_into_the_text():
    assert fragments("Hello  there, agent.") == ["Hello", " there,", " agent."]
    assert "".join(fragments("one two three")) == "one two three"
    assert fragments("") == []


# ------------------------------------------------------------------------------------------ ratios
def _level(ttfa: float, total: float, throughput: float) -> dict[str, Any]:
    return {"ttfa_s": {"p50": ttfa}, "total_s": {"p50": total}, "audio_s_per_s": throughput}


def test_ratio_math():
    direct = {1: _level(0.10, 1.0, 2.0), 2: _level(0.12, 1.2, 3.0), 8: _level(0.2, 2.0, 6.0)}
    gateway = {1: _level(0.15, 1.1, 1.8), 8: _level(0.3, 2.5, 5.0)}
    assert stats.batching_gain(direct, 8, 1) == pytest.approx(3.0)
    assert stats.batching_gain(direct, 16, 1) is None
    assert stats.scaling(direct) == {1: pytest.approx(1.0), 2: pytest.approx(1.5), 8: pytest.approx(3.0)}
    assert stats.overhead(gateway, direct, "ttfa_s") == {1: pytest.approx(1.5), 8: pytest.approx(1.5)}
    assert stats.overhead(gateway, direct, "total_s")[8] == pytest.approx(1.25)
    assert stats.overhead_ms(gateway, direct, "ttfa_s")[1] == pytest.approx(50.0)
    assert stats.ttfa_over_total(direct)[2] == pytest.approx(0.1)
    assert stats.ratio(1.0, 0.0) is None and stats.ratio(None, 1.0) is None


def test_compute_ratios_headline_and_markdown_from_a_synthetic_run(tmp_path):
    direct = {c: {**_level(0.1 * c, c, 2.0 * c**0.5), "audio_s_per_triton_cpu_s": c} for c in (1, 2, 4, 8)}
    gateway = {c: {**level, "server_cpu_s": {"gateway": 0.01, "triton": 1.0}} for c, level in direct.items()}
    ratios = report.compute_ratios({"paths": {"triton": direct, "gateway": gateway}}, None)
    assert ratios["batching_gain"]["triton"]["value"] == pytest.approx(8**0.5)
    assert ratios["batching_gain"]["triton"]["per_cpu_s"] == pytest.approx(8.0)
    assert ratios["gateway_overhead"]["ttfa_p50"][4] == pytest.approx(1.0)
    assert ratios["gateway_overhead"]["gateway_cpu_over_triton_cpu"][1] == pytest.approx(0.01)
    assert ratios["ttfa_over_total"]["gateway"][2] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------ load tool
class FakeTarget:
    """Streams three 0.1 s chunks 10 ms apart; the request whose text says "fail" errors after one."""

    name = "fake"

    def __init__(self) -> None:
        self.sent = 0

    async def stream(self, job):
        self.sent += 1
        for number in range(3):
            await asyncio.sleep(0.01)
            if number == 1 and "fail" in job.text:
                raise LoadError("boom")
            yield Chunk(samples=2400, sample_rate=24000, finish_reason="stop" if number == 2 else "")
        yield Chunk(samples=0, sample_rate=24000)  # the empty closing chunk

    async def aclose(self) -> None:
        pass


def test_run_level_by_count_records_every_request_and_its_failures():
    plan = [*jobs(("ok",), 1, max_new_tokens=8), *jobs(("fail",), 1, max_new_tokens=8)]
    level = asyncio.run(run_level(FakeTarget(), plan, 2, requests=5))
    assert [r.index for r in level.records] == [0, 1, 2, 3, 4]
    good, bad = level.records[0], level.records[1]
    assert good.ok and good.chunks == 3 and good.audio_s == pytest.approx(0.3)
    assert good.finish_reason == "stop"
    assert 0 < good.ttfa_s < good.total_s
    assert not bad.ok and bad.error == "LoadError: boom" and bad.total_s is None
    summary = stats.summarize_level(level.records, level.wall_s)
    assert (summary["ok"], summary["errors"]) == (3, 2)


def test_run_level_by_duration_stops_sending_when_time_is_up():
    target = FakeTarget()
    plan = jobs(("ok",), 1, max_new_tokens=8)
    level = asyncio.run(run_level(target, plan, 3, requests=None, duration_s=0.2))
    assert target.sent == len(level.records) >= 3
    assert all(record.ok for record in level.records)
    with pytest.raises(ValueError):
        asyncio.run(run_level(target, jobs(("ok",), 1, max_new_tokens=8), 1, requests=None))


def test_a_stream_that_never_ends_is_a_timeout_error():
    class Stuck(FakeTarget):
        async def stream(self, job):
            yield Chunk(samples=2400, sample_rate=24000)
            await asyncio.sleep(10)

    level = asyncio.run(run_level(Stuck(), jobs(("ok",), 1, max_new_tokens=8), 1, requests=1, timeout_s=0.1))
    (record,) = level.records
    assert record.error.startswith("no end of stream") and record.ttfa_s is not None


# ------------------------------------------------------------------------------------------ Triton stats
def _stats(inferences: int, executions: int, queue_ns: int, batches: dict[int, int]) -> dict[str, Any]:
    return {
        "inference_count": str(inferences),
        "execution_count": str(executions),
        "inference_stats": {"queue": {"count": str(inferences), "ns": str(queue_ns)}, "fail": {}},
        "batch_stats": [
            {"batch_size": str(size), "compute_infer": {"count": str(count), "ns": "1"}}
            for size, count in batches.items()
        ],
    }


def test_triton_statistics_delta():
    before = _stats(4, 3, 8_000_000, {1: 2, 2: 1})
    after = _stats(12, 5, 24_000_000, {1: 2, 2: 1, 4: 2})
    delta = tritonstats.stats_delta(before, after)
    assert (delta["inference_count"], delta["execution_count"]) == (8, 2)
    assert delta["avg_batch_size"] == pytest.approx(4.0)
    assert delta["queue_ms_avg"] == pytest.approx(2.0)
    assert delta["compute_infer_ms_avg"] is None
    assert delta["batch_sizes"] == {4: 2}
    wrapped = {"model_stats": [{"name": "other"}, {"name": "custom_voice", "inference_count": "3"}]}
    assert tritonstats.model_entry(wrapped, "custom_voice")["inference_count"] == "3"


# ------------------------------------------------------------------------------------------ perf_analyzer
def test_perf_analyzer_csv_and_profile_export_parsing(tmp_path):
    csv_path = tmp_path / "out.csv"
    csv_path.write_text(
        "Concurrency,Inferences/Second,Response Throughput,Server Queue,Server Compute Infer,"
        "p50 latency,p90 latency,p99 latency,Avg latency\n2,1.5,9.0,2100,3000,700000,800000,900000,710000\n"
    )
    figures = perf.summarize_csv(perf.parse_csv(csv_path))
    assert figures["infer_per_s"] == 1.5
    assert figures["latency_p50_s"] == pytest.approx(0.7)
    assert figures["server_queue_s"] == pytest.approx(0.0021)
    chunk = {"sequence": 0, "sample_rate": 24000, "finish_reason": "", "audio": [0.25] * 4800}
    last = {"sequence": 2, "sample_rate": 24000, "finish_reason": "stop", "audio": []}
    # perf_analyzer writes the empty FINAL response with uninitialised values
    final = {"sequence": 671088784, "sample_rate": 671088784, "finish_reason": "", "audio": 7.1e-15}
    export = {
        "experiments": [
            {
                "requests": [
                    {
                        "timestamp": 1_000_000_000,
                        "response_timestamps": [1_100_000_000, 1_300_000_000, 1_400_000_000, 1_400_100_000],
                        "response_outputs": [chunk, chunk, last, final],
                    },
                    {"timestamp": 1_500_000_000, "response_timestamps": [], "response_outputs": []},
                ]
            }
        ]
    }
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(export, separators=(",", ":")))
    export = perf.load_export(export_path)
    assert export["experiments"][0]["requests"][0]["response_outputs"][0]["audio_samples"] == 4800
    ok, failed = perf.records_from_export(export, "custom_voice", 2)
    assert ok.ttfa_s == pytest.approx(0.1) and ok.total_s == pytest.approx(0.4001)
    assert ok.audio_s == pytest.approx(0.4) and ok.chunks == 2 and ok.finish_reason == "stop"
    assert ok.playback.underruns == 0
    assert failed.error == "no response" and failed.start_s == pytest.approx(0.5)


def test_perf_input_data_has_the_same_inputs_in_every_entry():
    plan = jobs(SHORT_TEXTS, 3, max_new_tokens=16, seed=5)
    prompt = perf.VoicePromptData(speaker_embedding=[0.1, 0.2], ref_codes=[[1] * 16, [2] * 16], ref_text="hi")
    for model in ("custom_voice", "voice_design", "voice_clone"):
        data = perf.input_data(model, plan, prompt)["data"]
        assert len(data) == 3 and len({tuple(sorted(entry)) for entry in data}) == 1
        assert [entry["seed"] for entry in data] == [[5], [6], [7]]
    clone = perf.input_data("voice_clone", plan, prompt)["data"][0]
    assert clone["ref_codes"]["shape"] == [2, 16] and len(clone["ref_codes"]["content"]) == 32
    with pytest.raises(ValueError):
        perf.input_data("voice_clone", plan, None)


# ------------------------------------------------------------------------------------------ misc
def test_targets_are_not_measured_off_the_gpu():
    levels = {1: {"ttfa_s": {"p50": 0.03, "p95": 0.05}, "audio_s_per_s": 600.0}}
    rows = targets.evaluate({"triton": levels}, on_gpu_full_model=False)
    assert {row["status"] for row in rows} == {targets.NOT_MEASURED}
    on_gpu = targets.evaluate({"triton": levels}, on_gpu_full_model=True)
    gpu = {row["target"]: row["status"] for row in on_gpu}
    assert gpu["TTFA p50 <= 40 ms alone"] == "met"
    assert gpu["aggregate >= 500 audio-s/s"] == "met"
    assert gpu["TTFA p50 <= 250 ms at concurrency 32"].startswith("not measured")


def test_requests_per_level_and_models_to_serve():
    assert requests_per_level(8, None, 2) == 16
    assert requests_per_level(1, None, 1) == 2
    assert requests_per_level(8, 3, 2) == 3
    assert models_to_serve(["voice_clone", "custom_voice"]) == ["voice_clone", "custom_voice", "voice_prompt"]


def test_process_tree_cpu_time_of_this_process():
    used = cpu.tree_cpu_seconds(os.getpid())
    assert used is not None and used > 0
    assert cpu.tree_cpu_seconds(None) is None
    assert cpu.delta({"a": 1.0, "b": None}, {"a": 1.5, "b": 2.0}) == {"a": 0.5, "b": None}


# ------------------------------------------------------------------------------------------ profile
def test_the_profile_times_each_stage_against_the_package_style_baseline(tmp_path):
    from benchmarks import run
    from benchmarks.profile import format_breakdown

    args = run.parse_args(["--profile", "--profile-streams", "2", "--profile-frames", "6"])
    profiled = run.run_profile(args, run.CPU, tmp_path)
    result, baseline = profiled["result"], profiled["baseline"]
    assert (result["code_predictor"], result["decoder"]) == ("StaticCodePredictor", "StreamingDecoder")
    assert (baseline["code_predictor"], baseline["decoder"]) == ("ReferenceCodePredictor", "ChunkDecoder")
    # The same work both ways: same frames and the same audio length (seeded, batch-independent sampling).
    assert result["frames"] == baseline["frames"] > 0
    assert result["audio_s"] == baseline["audio_s"] > 0
    assert {"talker", "code_predictor", "decoder", "sampling", "python"} <= set(result["stages"])
    assert sum(stage["share"] for stage in result["stages"].values()) == pytest.approx(1.0)
    assert profiled["speedup_over_baseline"] == pytest.approx(baseline["ms_per_step"] / result["ms_per_step"])
    assert "StaticCodePredictor, StreamingDecoder" in "\n".join(format_breakdown(result))


def test_engine_figures_parse_and_difference():
    from benchmarks import enginestats

    text = "\n".join(
        [
            "# TYPE qwen3_tts_steps_total counter",
            'qwen3_tts_steps_total{model="custom_voice"} 10',
            'qwen3_tts_steps_total{model="voice_design"} 99',
            'qwen3_tts_frames_total{model="custom_voice"} 35',
            'qwen3_tts_step_seconds_total{model="custom_voice"} 0.5',
            'qwen3_tts_first_audio_seconds_count{model="custom_voice"} 4',
            'qwen3_tts_finished_total{model="custom_voice",reason="stop"} 4',
            'nv_inference_count{model="custom_voice",version="1"} 4',
        ]
    )
    after = enginestats.parse(text, "custom_voice")
    assert after == {
        "qwen3_tts_steps_total": 10.0,
        "qwen3_tts_frames_total": 35.0,
        "qwen3_tts_step_seconds_total": 0.5,
        "qwen3_tts_first_audio_seconds_count": 4.0,
        'qwen3_tts_finished_total{reason="stop"}': 4.0,
    }
    before = {
        "qwen3_tts_steps_total": 2.0,
        "qwen3_tts_frames_total": 3.0,
        "qwen3_tts_step_seconds_total": 0.1,
    }
    figures = enginestats.delta(before, after)
    assert figures == {
        "steps": 8,
        "frames": 32,
        "running_batch_avg": 4.0,
        "step_ms_avg": pytest.approx(50.0),
        "first_audio_count": 4,
    }
    assert enginestats.delta(after, after)["running_batch_avg"] is None


def test_the_prompt_stall_tool_measures_both_ways_on_the_tiny_base_engine(tmp_path, monkeypatch):
    from benchmarks import prompt_stall

    out = tmp_path / "stall.json"
    written: list[dict] = []  # the file after each clip: a run cut by a timeout keeps what it measured
    measure = prompt_stall.measure

    def watched(*args, on_clip, **kwargs):
        def clip_done(results, seconds):
            on_clip(results, seconds)
            written.append(json.loads(out.read_text()))

        return measure(*args, on_clip=clip_done, **kwargs)

    monkeypatch.setattr(prompt_stall, "measure", watched)
    assert prompt_stall.main(["--streams", "2", "--clip-seconds", "20", "--out", str(out)]) == 0
    assert [(list(w["clips"]), w["complete"]) for w in written] == [(["20"], False)]
    figures = json.loads(out.read_text())
    assert figures["complete"] is True
    beside, inline = figures["clips"]["20"]["beside"], figures["clips"]["20"]["inline"]
    assert figures["median_step_ms"] > 0 and not figures["stream_errors"]
    assert figures["step_share"] == Settings().voice_prompt_step_share  # the served default
    for row in (beside, inline):
        assert row["extraction_ms"] > 0 and row["longest_pause_ms"] > 0 and row["quiet_longest_pause_ms"] > 0
        assert row["quiet_steps"] > 0
    # On the engine thread the streams wait for the whole extraction; beside it they keep stepping.
    assert inline["longest_pause_ms"] > 2 * beside["longest_pause_ms"]
    assert inline["added_pause_steps"] > beside["added_pause_steps"]
    assert beside["steps"] > inline["steps"]
