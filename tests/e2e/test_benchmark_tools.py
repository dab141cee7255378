"""The benchmarks' load tools against the real stack: the load tool on both paths (straight to the session's
`triton_server` and through a gateway in a thread) and the voice-agent tool, each writing its report. The
tools' arithmetic is unit-tested in tests/bench/test_bench.py."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import zlib
from pathlib import Path

import pytest

from benchmarks import report, targets
from benchmarks.agent import AgentConfig, run_agent
from benchmarks.load import LoadConfig, run_load
from benchmarks.stack import gateway_thread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, checking the signature and the chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert crc == zlib.crc32(kind + body)
    assert data.rstrip(b"\0").endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", body[:8])


@pytest.fixture
def gateway_url(triton_server, tmp_path):
    settings = triton_server.settings.model_copy(
        update={"voice_db_path": tmp_path / "voices.db", "api_keys": []}
    )
    with gateway_thread(settings, triton_server.grpc_url) as url:
        yield url


@pytest.mark.e2e
def test_load_tool_against_gateway_and_triton_writes_sane_results(triton_server, gateway_url, tmp_path):
    config = LoadConfig(
        concurrencies=[1, 2],
        triton_url=triton_server.grpc_url,
        gateway_url=gateway_url,
        requests=2,
        warmup=0,
        max_new_tokens=8,
        timeout_s=120,
        metrics_url=triton_server.metrics_url,
    )
    load = asyncio.run(run_load(config))
    assert set(load["paths"]) == {"triton", "gateway"}
    for path, levels in load["paths"].items():
        assert set(levels) == {1, 2}
        for concurrency, summary in levels.items():
            assert (summary["requests"], summary["errors"]) == (2, 0), (path, concurrency, summary)
            assert summary["audio_s"] > 0 and summary["audio_s_per_s"] > 0
            assert 0 < summary["ttfa_s"]["p50"] < summary["total_s"]["p50"]
            assert summary["rtf"]["p50"] > 0
            assert summary["triton_stats"]["inference_count"] == 2
            engine = summary["engine_stats"]
            assert engine["first_audio_count"] == 2 and engine["steps"] > 0
            assert 1 <= engine["running_batch_avg"] <= concurrency and engine["step_ms_avg"] > 0
            for record in summary["records"]:
                assert 0 < record["ttfa_s"] < record["total_s"] and record["audio_s"] > 0
                assert record["finish_reason"] in ("stop", "length", "repetition")
                assert record["underruns"] >= 0
    results = {
        "meta": {"mode": "cpu", "preset": "tiny", "machine": {"gpus": []}},
        "load": load,
        "ratios": report.compute_ratios(load, None),
        "targets": targets.evaluate(load["paths"], on_gpu_full_model=False),
    }
    files = report.write_results(results, tmp_path / "out")
    assert sorted(files) == ["json", "md", "png"]
    written = json.loads(files["json"].read_text())
    assert written["load"]["paths"]["triton"]["1"]["errors"] == 0
    gain = written["ratios"]["batching_gain"]["triton"]
    assert gain["high"] == 2 and gain["low"] == 1 and math.isfinite(gain["value"])
    assert set(written["ratios"]["gateway_overhead"]["ttfa_p50"]) == {"1", "2"}
    assert "| triton | 1 | 2 | 0 |" in files["md"].read_text()
    width, height = _png_size(files["png"])
    assert width > 300 and height > 200


@pytest.mark.e2e
def test_voice_agent_sessions_speak_and_write_sane_results(triton_server, tmp_path):
    config = AgentConfig(
        concurrencies=[1, 2],
        triton_url=triton_server.grpc_url,
        words_per_s=20.0,
        rounds=1,
        warmup=0,
        texts=("Agents speak while they think, one word after another.",),
        timeout_s=120,
    )
    agent = asyncio.run(run_agent(config))
    assert set(agent["levels"]) == {1, 2}
    for concurrency, summary in agent["levels"].items():
        assert (summary["sessions"], summary["errors"]) == (concurrency, 0), summary
        assert 0 < summary["first_audio_s"]["p50"] <= summary["first_audio_s"]["p90"]
        assert summary["tail_s"]["p50"] is not None and summary["audio_s"] > 0
        assert summary["underruns_per_stream"] >= 0
        for record in summary["records"]:
            assert record["words"] == 9 and record["error"] is None
            # 9 words at 20/s: the last is sent 8 / 20 s after the first, and times count from the first
            assert record["last_fragment_s"] == pytest.approx(0.4, abs=0.15)
            assert 0 < record["first_audio_s"] <= record["end_s"]
            assert record["end_s"] > record["last_fragment_s"]  # the text ends before the speech does
            assert record["finish_reason"] in ("stop", "length", "repetition")
    results = {"meta": {"mode": "cpu"}, "agent": agent}
    files = report.write_results(results, tmp_path / "out")
    assert json.loads(files["json"].read_text())["agent"]["levels"]["2"]["errors"] == 0
    assert "## Voice agent" in files["md"].read_text() and "| 2 | 2 | 0 |" in files["md"].read_text()
    assert any(line.startswith("  agent c=1") for line in report.agent_lines(agent))
