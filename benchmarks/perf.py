"""perf_analyzer against each synthesis model: gRPC ``--streaming``, one run per concurrency level.

Each run sends a fixed number of requests (``--request-count``) built from an ``--input-data`` JSON file of
real texts (voice_clone gets a voice prompt made once by the ``voice_prompt`` model). Two outputs are read:

- the CSV (``-f``): throughput (inferences/s), latency percentiles (perf_analyzer times a decoupled
  request from sending it to its final response, i.e. the whole stream) and Triton's server-side
  averages (queue, compute input/infer/output, in microseconds);
- the profile export (``--profile-export-file``): every response's timestamp and outputs, from which the
  same per-request records as the load tool are rebuilt (time to first audio, audio seconds, RTF,
  underruns). The raw export holds every audio sample, so it is deleted once read unless kept.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import cpu
from benchmarks.stats import RequestRecord, cpu_figures, summarize_level
from benchmarks.texts import (
    DESIGN_INSTRUCT,
    REFERENCE_TRANSCRIPT,
    SHORT_TEXTS,
    Job,
    jobs,
    reference_clip,
    requests_per_level,
)
from qwen3_tts_serving.launcher import perf_analyzer_binary, perf_analyzer_env

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000
_NS = 1e9


@dataclass(frozen=True)
class VoicePromptData:
    speaker_embedding: list[float]
    ref_codes: list[list[int]]
    ref_text: str


@dataclass
class PerfConfig:
    grpc_url: str
    models: Sequence[str]
    concurrencies: Sequence[int]
    out_dir: Path
    requests: int | None = None
    rounds: int = 1
    texts: tuple[str, ...] = SHORT_TEXTS
    max_new_tokens: int = 40
    seed: int = 0
    timeout_s: float = 300.0
    keep_exports: bool = False
    extra_args: Sequence[str] = field(default_factory=tuple)
    cpu_pids: dict[str, int | None] = field(default_factory=dict)  # name -> pid whose CPU time to record


# ------------------------------------------------------------------------------------------ input data
def _entry(model: str, job: Job, prompt: VoicePromptData | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "text": [job.text],
        "language": [job.language],
        "max_new_tokens": [job.max_new_tokens],
        "seed": [job.seed],
    }
    if model == "custom_voice":
        entry["speaker"] = [job.speaker]
    elif model == "voice_design":
        entry["instruct"] = [DESIGN_INSTRUCT]
    elif model == "voice_clone":
        if prompt is None:
            raise ValueError("voice_clone needs a voice prompt")
        codes = prompt.ref_codes
        entry["speaker_embedding"] = {
            "content": prompt.speaker_embedding,
            "shape": [len(prompt.speaker_embedding)],
        }
        entry["ref_codes"] = {"content": [c for row in codes for c in row], "shape": [len(codes), 16]}
        entry["ref_text"] = [prompt.ref_text]
        entry["x_vector_only"] = [False]
    else:
        raise ValueError(f"no input data for model {model!r}")
    return entry


def input_data(model: str, plan: Sequence[Job], prompt: VoicePromptData | None = None) -> dict[str, Any]:
    """perf_analyzer's ``--input-data`` JSON: one entry per job, every entry with the same inputs (Triton
    only batches requests whose input sets match)."""
    return {"data": [_entry(model, job, prompt) for job in plan]}


def make_voice_prompt(grpc_url: str, timeout_s: float = 300.0) -> VoicePromptData:
    """Run the ``voice_prompt`` model once on the reference clip (in-context: codes and transcript)."""
    from qwen3_tts_client.triton import TritonTTSClient

    with TritonTTSClient(grpc_url, timeout_s=timeout_s) as client:
        prompt = client.voice_prompt((reference_clip(), SAMPLE_RATE), ref_text=REFERENCE_TRANSCRIPT)
    return VoicePromptData(
        speaker_embedding=[float(v) for v in prompt.speaker_embedding],
        ref_codes=[[int(c) for c in row] for row in prompt.ref_codes],
        ref_text=REFERENCE_TRANSCRIPT,
    )


# ------------------------------------------------------------------------------------------ running
def find_perf_analyzer() -> Path:
    """perf_analyzer beside this interpreter (the project's venv), else the one on PATH (for example a
    tritonclient wheel installed with ``pip --target`` on a machine without the venv)."""
    try:
        return perf_analyzer_binary()
    except FileNotFoundError:
        found = shutil.which("perf_analyzer")
        if found is None:
            raise
        return Path(found)


def perf_command(
    model: str,
    url: str,
    data_path: Path,
    concurrency: int,
    requests: int,
    csv_path: Path,
    export_path: Path,
    extra_args: Sequence[str] = (),
) -> list[str]:
    return [
        str(find_perf_analyzer()),
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "--streaming",
        "--input-data",
        str(data_path),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--request-count",
        str(requests),
        "--max-threads",
        str(max(16, concurrency)),
        "-f",
        str(csv_path),
        "--verbose-csv",
        "--profile-export-file",
        str(export_path),
        *extra_args,
    ]


def parse_csv(path: Path) -> dict[str, float]:
    """The first data row of perf_analyzer's CSV report, every column as a number."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path} has no data row")
    values: dict[str, float] = {}
    for key, raw in rows[0].items():
        if key is None:
            continue
        try:
            values[key.strip()] = float(raw)
        except (TypeError, ValueError):
            continue
    return values


_AUDIO_ARRAY = re.compile(r'"audio":\s*\[([^\]]*)\]')


def _count_samples(match: re.Match[str]) -> str:
    body = match.group(1)
    return f'"audio_samples":{body.count(",") + 1 if body.strip() else 0}'


def load_export(path: Path) -> dict[str, Any]:
    """The profile export with every ``"audio": [...]`` replaced by ``"audio_samples": N`` before parsing:
    a GPU run's export holds minutes of audio as JSON numbers (hundreds of MB), only the counts matter."""
    return json.loads(_AUDIO_ARRAY.sub(_count_samples, path.read_text()))


def _response_samples(output: Mapping[str, Any]) -> int:
    """Samples of one response. perf_analyzer writes the empty FINAL response with uninitialised values
    (a scalar ``audio``, a nonsense ``sample_rate``): such entries count as no audio."""
    if output.get("sample_rate") != SAMPLE_RATE:
        return 0
    samples = output.get("audio_samples", output.get("audio"))
    if isinstance(samples, list):
        return len(samples)
    return samples if isinstance(samples, int) and "audio_samples" in output else 0


def records_from_export(export: Mapping[str, Any], model: str, concurrency: int) -> list[RequestRecord]:
    """Per-request records from perf_analyzer's profile export (timestamps in ns)."""
    records = []
    experiments = export.get("experiments", [])
    requests = [r for e in experiments for r in e.get("requests", [])]
    starts = [r["timestamp"] for r in requests]
    origin = min(starts) if starts else 0
    for index, request in enumerate(requests):
        sent = request["timestamp"]
        record = RequestRecord(
            path=model, concurrency=concurrency, index=index, start_s=(sent - origin) / _NS
        )
        for at, output in zip(
            request.get("response_timestamps", []), request.get("response_outputs", []), strict=False
        ):
            samples = _response_samples(output)
            if output.get("finish_reason"):
                record.finish_reason = output["finish_reason"]
            if samples <= 0:
                continue
            arrival = (at - sent) / _NS
            record.chunks += 1
            record.arrivals_s.append(arrival)
            record.durations_s.append(samples / SAMPLE_RATE)
            record.audio_s += samples / SAMPLE_RATE
            record.ttfa_s = arrival if record.ttfa_s is None else record.ttfa_s
        timestamps = request.get("response_timestamps", [])
        if timestamps:
            record.total_s = (max(timestamps) - sent) / _NS
        else:
            record.error = "no response"
        records.append(record)
    return records


def _wall_s(export: Mapping[str, Any]) -> float:
    requests = [r for e in export.get("experiments", []) for r in e.get("requests", [])]
    if not requests:
        return 0.0
    ends = [max(r.get("response_timestamps") or [r["timestamp"]]) for r in requests]
    return (max(ends) - min(r["timestamp"] for r in requests)) / _NS


def summarize_csv(values: Mapping[str, float]) -> dict[str, float | None]:
    """The CSV's figures in seconds (it reports microseconds)."""

    def seconds(key: str) -> float | None:
        value = values.get(key)
        return None if value is None else value / 1e6

    return {
        "infer_per_s": values.get("Inferences/Second"),
        "responses_per_s": values.get("Response Throughput"),
        "latency_p50_s": seconds("p50 latency"),
        "latency_p90_s": seconds("p90 latency"),
        "latency_p99_s": seconds("p99 latency"),
        "latency_avg_s": seconds("Avg latency"),
        "server_queue_s": seconds("Server Queue"),
        "server_compute_input_s": seconds("Server Compute Input"),
        "server_compute_infer_s": seconds("Server Compute Infer"),
        "server_compute_output_s": seconds("Server Compute Output"),
    }


def run_level(config: PerfConfig, model: str, data_path: Path, concurrency: int) -> dict[str, Any]:
    requests = requests_per_level(concurrency, config.requests, config.rounds)
    stem = config.out_dir / f"{model}-c{concurrency}"
    csv_path, export_path = stem.with_suffix(".csv"), stem.with_suffix(".export.json")
    command = perf_command(
        model, config.grpc_url, data_path, concurrency, requests, csv_path, export_path, config.extra_args
    )
    waves = math.ceil(requests / concurrency)
    logger.info("perf_analyzer %s c=%d (%d requests)", model, concurrency, requests)
    cpu_before, load_before = cpu.snapshot(config.cpu_pids), os.getloadavg()[0]
    run = subprocess.run(
        command,
        env=perf_analyzer_env(),
        capture_output=True,
        text=True,
        timeout=config.timeout_s * waves + 120,
        check=False,
    )
    cpu_used = cpu.delta(cpu_before, cpu.snapshot(config.cpu_pids))
    stem.with_suffix(".log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        tail = (run.stdout + run.stderr)[-1500:]
        return {"error": f"perf_analyzer exited with {run.returncode}: {tail}", "requests": requests}
    export = load_export(export_path)
    if not config.keep_exports:
        export_path.unlink()
    summary = summarize_level(records_from_export(export, model, concurrency), _wall_s(export))
    summary.update(cpu_figures(cpu_used, summary["audio_s"], summary["ok"]))
    summary["load_average"] = [load_before, os.getloadavg()[0]]
    return {"perf_analyzer": summarize_csv(parse_csv(csv_path)), "client": summary}


def run_perf(config: PerfConfig) -> dict[str, dict[int, Any]]:
    """Every model at every concurrency: ``{model: {concurrency: {"perf_analyzer", "client"}}}``."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    prompt = make_voice_prompt(config.grpc_url, config.timeout_s) if "voice_clone" in config.models else None
    plan = jobs(config.texts, len(config.texts), max_new_tokens=config.max_new_tokens, seed=config.seed)
    results: dict[str, dict[int, Any]] = {}
    for model in config.models:
        data_path = config.out_dir / f"{model}-input.json"
        data_path.write_text(json.dumps(input_data(model, plan, prompt)))
        results[model] = {c: run_level(config, model, data_path, c) for c in config.concurrencies}
    return results
