"""Results on disk (``results.json``, ``results.md``, ``results.png``) and the figures printed at the end.

The ratios are what carries from one machine to another: batching gain (throughput at the highest
concurrency over concurrency 1), gateway overhead (through the gateway over direct to Triton, same
concurrency) and streaming TTFA over the full-request latency.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import stats

logger = logging.getLogger(__name__)

HEADLINE_HIGH = 8  # "throughput at concurrency 8 over concurrency 1" (the highest level when 8 is absent)
CPU_KEY = "audio_s_per_triton_cpu_s"


def _high(levels: Mapping[int, Any]) -> int | None:
    if not levels:
        return None
    return HEADLINE_HIGH if HEADLINE_HIGH in levels and min(levels) < HEADLINE_HIGH else max(levels)


def _perf_levels(perf: Mapping[str, Mapping[int, Any]], model: str) -> dict[int, Any]:
    """perf_analyzer levels of ``model`` shaped like load-tool summaries (client figures + infer/s)."""
    levels = {}
    for concurrency, result in perf.get(model, {}).items():
        if "client" in result:
            levels[concurrency] = {**result["client"], "infer_per_s": result["perf_analyzer"]["infer_per_s"]}
    return levels


def compute_ratios(load: Mapping[str, Any] | None, perf: Mapping[str, Any] | None) -> dict[str, Any]:
    paths: Mapping[str, Mapping[int, Any]] = (load or {}).get("paths", {})
    ratios: dict[str, Any] = {"batching_gain": {}, "scaling": {}, "ttfa_over_total": {}}
    for path, levels in paths.items():
        high = _high(levels)
        low = min(levels) if levels else None
        ratios["batching_gain"][path] = {
            "high": high,
            "low": low,
            "value": stats.batching_gain(levels, high, low) if high and low else None,
            "per_cpu_s": stats.batching_gain(levels, high, low, CPU_KEY) if high and low else None,
        }
        ratios["scaling"][path] = stats.scaling(levels)
        ratios["ttfa_over_total"][path] = stats.ttfa_over_total(levels)
    if "gateway" in paths and "triton" in paths:
        through, direct = paths["gateway"], paths["triton"]
        ratios["gateway_overhead"] = {
            "ttfa_p50": stats.overhead(through, direct, "ttfa_s"),
            "total_p50": stats.overhead(through, direct, "total_s"),
            "ttfa_p50_ms": stats.overhead_ms(through, direct, "ttfa_s"),
            "total_p50_ms": stats.overhead_ms(through, direct, "total_s"),
            "gateway_cpu_ms_per_request": {
                c: through[c].get("gateway_cpu_ms_per_request") for c in sorted(through)
            },
            "gateway_cpu_over_triton_cpu": {
                c: stats.ratio(
                    through[c].get("server_cpu_s", {}).get("gateway"),
                    through[c].get("server_cpu_s", {}).get("triton"),
                )
                for c in sorted(through)
            },
        }
    for model in perf or {}:
        levels = _perf_levels(perf or {}, model)
        high = _high(levels)
        if not high:
            continue
        low = min(levels)
        ratios["batching_gain"][f"perf_analyzer:{model}"] = {
            "high": high,
            "low": low,
            "value": stats.batching_gain(levels, high, low),
            "per_cpu_s": stats.batching_gain(levels, high, low, CPU_KEY),
            "infer_per_s": stats.ratio(levels[high]["infer_per_s"], levels[low]["infer_per_s"]),
        }
        ratios["ttfa_over_total"][f"perf_analyzer:{model}"] = stats.ttfa_over_total(levels)
    return ratios


def _f(value: float | None, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}{suffix}"


def headline(results: Mapping[str, Any]) -> list[str]:
    """The figures printed at the end of a run."""
    ratios = results.get("ratios", {})
    lines = ["Ratios (these carry from machine to machine):"]
    for path, gain in ratios.get("batching_gain", {}).items():
        lines.append(
            f"  batching gain {path}: throughput c={gain['high']} / c={gain['low']} = {_f(gain['value'])}x "
            f"(per server CPU second: {_f(gain.get('per_cpu_s'))}x)"
        )
    overhead = ratios.get("gateway_overhead", {})
    for concurrency, value in overhead.get("ttfa_p50", {}).items():
        lines.append(
            f"  gateway overhead c={concurrency}: TTFA p50 x{_f(value)} "
            f"({_f(overhead['ttfa_p50_ms'].get(concurrency), 1, suffix=' ms')}), total p50 "
            f"x{_f(overhead['total_p50'].get(concurrency))} "
            f"({_f(overhead['total_p50_ms'].get(concurrency), 1, suffix=' ms')})"
        )
    for concurrency, value in overhead.get("gateway_cpu_ms_per_request", {}).items():
        share = overhead["gateway_cpu_over_triton_cpu"].get(concurrency)
        lines.append(
            f"  gateway CPU c={concurrency}: {_f(value, 1)} ms per request, "
            f"{_f(share, 3)} of Triton's CPU time"
        )
    for path, per_level in ratios.get("ttfa_over_total", {}).items():
        shown = ", ".join(f"c={c}: {_f(v, 3)}" for c, v in per_level.items())
        lines.append(f"  streaming TTFA / full-request latency {path}: {shown}")
    lines.append("Absolute figures (this machine only):")
    for path, levels in results.get("load", {}).get("paths", {}).items():
        for concurrency, s in levels.items():
            lines.append(
                f"  {path:8s} c={concurrency:<3d} TTFA p50 {_f(s['ttfa_s']['p50'], 0, 1000, ' ms')} "
                f"p90 {_f(s['ttfa_s']['p90'], 0, 1000, ' ms')} p99 {_f(s['ttfa_s']['p99'], 0, 1000, ' ms')}, "
                f"total p50 {_f(s['total_s']['p50'], 2, suffix=' s')}, RTF p50 {_f(s['rtf']['p50'])} "
                f"max {_f(s['rtf']['max'])}, {_f(s['audio_s_per_s'], 3)} audio-s/s, "
                f"errors {s['errors']}, underruns {s['underruns']}{_engine_note(s)}"
            )
    for model, levels in results.get("perf_analyzer", {}).items():
        for concurrency, r in levels.items():
            if "error" in r:
                lines.append(f"  perf_analyzer {model} c={concurrency}: {r['error'][:200]}")
                continue
            pa, client = r["perf_analyzer"], r["client"]
            lines.append(
                f"  perf_analyzer {model:12s} c={concurrency:<3d} {_f(pa['infer_per_s'], 3)} infer/s, "
                f"latency p50 {_f(pa['latency_p50_s'], 2, suffix=' s')}, TTFA p50 "
                f"{_f(client['ttfa_s']['p50'], 0, 1000, ' ms')}, {_f(client['audio_s_per_s'], 3)} audio-s/s, "
                f"server queue {_f(pa['server_queue_s'], 2, 1000, ' ms')}"
            )
    if results.get("agent"):
        lines += agent_lines(results["agent"])
    for row in results.get("targets", []):
        lines.append(f"  target [{row['path']}] {row['target']}: {row['status']} ({_f(row['value'], 3)})")
    return lines


def agent_lines(agent: Mapping[str, Any]) -> list[str]:
    """The voice-agent figures printed at the end of a run."""
    config = agent.get("config", {})
    lines = [
        f"Voice agent ({config.get('model', 'custom_voice_session')}, text streamed at "
        f"{_f(config.get('words_per_s'), 1)} words/s):"
    ]
    for concurrency, s in agent.get("levels", {}).items():
        first, tail = s["first_audio_s"], s["tail_s"]
        lines.append(
            f"  agent c={concurrency!s:<3} first fragment -> first audio "
            f"p50 {_f(first['p50'], 0, 1000, ' ms')} p90 {_f(first['p90'], 0, 1000, ' ms')}, "
            f"last fragment -> end of audio p50 "
            f"{_f(tail['p50'], 2, suffix=' s')} p90 {_f(tail['p90'], 2, suffix=' s')}, underruns per stream "
            f"{_f(s['underruns_per_stream'])}, errors {s['errors']}/{s['sessions']}"
        )
    return lines


def _agent_table(agent: Mapping[str, Any]) -> list[str]:
    config = agent.get("config", {})
    lines = [
        f"`{config.get('model', 'custom_voice_session')}`, each session streams a sentence word by word at "
        f"{_f(config.get('words_per_s'), 1)} words/s; times from the first / last text fragment sent.",
        "",
        "| conc. | sessions | errors | first audio p50 / p90 (ms) | end of audio after last fragment "
        "p50 / p90 (s) | spoke before text end | underruns per stream | streams with underruns | stall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c, s in agent.get("levels", {}).items():
        first, tail = s["first_audio_s"], s["tail_s"]
        lines.append(
            f"| {c} | {s['sessions']} | {s['errors']} | {_f(first['p50'], 0, 1000)} / "
            f"{_f(first['p90'], 0, 1000)} | {_f(tail['p50'])} / {_f(tail['p90'])} | "
            f"{s['spoke_before_text_end']}/{s['ok']} | {_f(s['underruns_per_stream'])} | "
            f"{s['streams_with_underruns']} | {_f(s['stall_s'])} |"
        )
    return lines


def _engine_note(summary: Mapping[str, Any]) -> str:
    engine = summary.get("engine_stats") or {}
    if engine.get("running_batch_avg") is None:
        return ""
    return f", engine batch {_f(engine['running_batch_avg'])} at {_f(engine['step_ms_avg'], 1)} ms/step"


# ------------------------------------------------------------------------------------------ markdown
def _load_table(paths: Mapping[str, Mapping[int, Any]]) -> list[str]:
    lines = [
        "| path | conc. | requests | errors | TTFA p50 / p90 / p99 (ms) | total p50 (s) | RTF p50 / max "
        "| audio-s/s | audio-s per Triton CPU-s | underruns | Triton batch avg | Triton queue (ms) "
        "| engine running batch | engine step (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path, levels in paths.items():
        for c, s in levels.items():
            ttfa = s["ttfa_s"]
            triton = s.get("triton_stats", {})
            engine = s.get("engine_stats", {})
            lines.append(
                f"| {path} | {c} | {s['requests']} | {s['errors']} | {_f(ttfa['p50'], 0, 1000)} / "
                f"{_f(ttfa['p90'], 0, 1000)} / {_f(ttfa['p99'], 0, 1000)} | {_f(s['total_s']['p50'])} | "
                f"{_f(s['rtf']['p50'])} / {_f(s['rtf']['max'])} | {_f(s['audio_s_per_s'], 3)} | "
                f"{_f(s.get(CPU_KEY), 3)} | {s['underruns']} | {_f(triton.get('avg_batch_size'))} | "
                f"{_f(triton.get('queue_ms_avg'), 1)} | {_f(engine.get('running_batch_avg'))} | "
                f"{_f(engine.get('step_ms_avg'), 1)} |"
            )
    return lines


def _perf_table(perf: Mapping[str, Mapping[int, Any]]) -> list[str]:
    lines = [
        "| model | conc. | infer/s | latency p50 / p99 (s) | TTFA p50 (ms) | audio-s/s "
        "| audio-s per Triton CPU-s | RTF p50 | server queue (ms) | compute infer (ms) | underruns |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, levels in perf.items():
        for c, r in levels.items():
            if "error" in r:
                lines.append(f"| {model} | {c} | error: {r['error'][:80]!r} |||||||")
                continue
            pa, cl = r["perf_analyzer"], r["client"]
            lines.append(
                f"| {model} | {c} | {_f(pa['infer_per_s'], 3)} | {_f(pa['latency_p50_s'])} / "
                f"{_f(pa['latency_p99_s'])} | {_f(cl['ttfa_s']['p50'], 0, 1000)} | "
                f"{_f(cl['audio_s_per_s'], 3)} | {_f(cl.get(CPU_KEY), 3)} | {_f(cl['rtf']['p50'])} | "
                f"{_f(pa['server_queue_s'], 2, 1000)} | {_f(pa['server_compute_infer_s'], 2, 1000)} | "
                f"{cl['underruns']} |"
            )
    return lines


def _ratio_table(ratios: Mapping[str, Any]) -> list[str]:
    lines = [
        "Batching gain (aggregate audio-s/s at the high concurrency over the low one):",
        "",
        "| where | levels | throughput ratio | per Triton CPU-second |",
        "|---|---|---|---|",
    ]
    for path, gain in ratios.get("batching_gain", {}).items():
        lines.append(
            f"| {path} | c={gain['high']} / c={gain['low']} | {_f(gain['value'])} "
            f"| {_f(gain.get('per_cpu_s'))} |"
        )
    overhead = ratios.get("gateway_overhead", {})
    if overhead:
        lines += [
            "",
            "Gateway overhead (through the gateway over direct to Triton, same concurrency, p50):",
            "",
            "| conc. | TTFA ratio | TTFA delta (ms) | total ratio | total delta (ms) "
            "| gateway CPU ms/request | gateway CPU / Triton CPU |",
            "|---|---|---|---|---|---|---|",
        ]
        for c, value in overhead.get("ttfa_p50", {}).items():
            lines.append(
                f"| {c} | {_f(value)} | {_f(overhead['ttfa_p50_ms'].get(c), 1)} | "
                f"{_f(overhead['total_p50'].get(c))} | {_f(overhead['total_p50_ms'].get(c), 1)} | "
                f"{_f(overhead['gateway_cpu_ms_per_request'].get(c), 1)} | "
                f"{_f(overhead['gateway_cpu_over_triton_cpu'].get(c), 3)} |"
            )
    per_path = ratios.get("ttfa_over_total", {})
    levels = sorted({c for per_level in per_path.values() for c in per_level})
    if levels:
        lines += [
            "",
            "Streaming TTFA over full-request latency (p50 over p50):",
            "",
            "| where | " + " | ".join(f"c={c}" for c in levels) + " |",
            "|---|" + "---|" * len(levels),
        ]
        for path, per_level in per_path.items():
            lines.append(f"| {path} | " + " | ".join(_f(per_level.get(c), 3) for c in levels) + " |")
    return lines


def _profile_lines(profile: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Engine profile: {profile['model']} on {profile['device']} ({profile['dtype']}), "
        f"{profile['streams']} streams, {profile['steps']} steps, {_f(profile['ms_per_step'], 1)} ms/step.",
        "",
        "| stage | total ms | ms/step | share |",
        "|---|---|---|---|",
    ]
    for name, figures in profile["stages"].items():
        lines.append(
            f"| {name} | {figures['total_ms']:.1f} | {figures['ms_per_step']:.2f} | {figures['share']:.1%} |"
        )
    return lines


def markdown(results: Mapping[str, Any]) -> str:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    gpus = ", ".join(g.get("name", "?") for g in machine.get("gpus", [])) or "none"
    load = ", ".join(f"{value:.2f}" for value in machine.get("load_average") or [])
    lines = [
        f"# Benchmark results {meta.get('started', '')}",
        "",
        f"- mode: {meta.get('mode')}, checkpoints: {meta.get('preset')} ({meta.get('checkpoint_dir')})",
        f"- machine: {machine.get('cpu')}, {machine.get('usable_cpus')} usable CPUs, "
        f"{machine.get('memory_gib')} GiB, GPUs: {gpus}, load average at start {load or 'n/a'}",
        f"- engine: {meta.get('engine')}",
        f"- commit: {meta.get('commit')}, duration {_f(meta.get('duration_s'), 0)} s",
        "",
    ]
    if results.get("ratios"):
        lines += ["## Ratios", "", *_ratio_table(results["ratios"]), ""]
    if results.get("load"):
        lines += ["## Load tool (custom_voice)", "", *_load_table(results["load"]["paths"]), ""]
    if results.get("perf_analyzer"):
        lines += ["## perf_analyzer (gRPC streaming)", "", *_perf_table(results["perf_analyzer"]), ""]
    if results.get("agent"):
        lines += ["## Voice agent", "", *_agent_table(results["agent"]), ""]
    if results.get("targets"):
        lines += ["## Targets", "", "| target | source | path | value | status |", "|---|---|---|---|---|"]
        for row in results["targets"]:
            lines.append(
                f"| {row['target']} | {row['source']} | {row['path']} | {_f(row['value'], 3)} "
                f"| {row['status']} |"
            )
        lines.append("")
    if results.get("profile"):
        lines += ["## Engine profile", "", *_profile_lines(results["profile"]), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ plot
def _series(results: Mapping[str, Any]) -> dict[str, dict[int, Mapping[str, Any]]]:
    series: dict[str, dict[int, Mapping[str, Any]]] = {}
    for path, levels in results.get("load", {}).get("paths", {}).items():
        series[f"load: {path}"] = dict(levels)
    for model in results.get("perf_analyzer", {}):
        series[f"perf_analyzer: {model}"] = _perf_levels(results["perf_analyzer"], model)
    return series


def plot(results: Mapping[str, Any], path: Path) -> None:
    """TTFA p50 and aggregate throughput against concurrency, one line per path/model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ttfa_axis, throughput_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    concurrencies: set[int] = set()
    for label, levels in _series(results).items():
        xs = sorted(c for c in levels if levels[c].get("ttfa_s", {}).get("p50") is not None)
        concurrencies.update(xs)
        ttfa_axis.plot(xs, [levels[c]["ttfa_s"]["p50"] * 1000 for c in xs], marker="o", label=label)
        throughput_axis.plot(xs, [levels[c]["audio_s_per_s"] for c in xs], marker="o", label=label)
    for axis, title, unit in (
        (ttfa_axis, "Time to first audio (p50)", "ms"),
        (throughput_axis, "Aggregate throughput", "audio seconds per second"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted(concurrencies) or [1])
        axis.set_xticklabels([str(c) for c in sorted(concurrencies)] or ["1"])
        axis.set_xlabel("concurrent streams")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    throughput_axis.legend(fontsize=8)
    meta = results.get("meta", {})
    figure.suptitle(f"Qwen3-TTS serving: {meta.get('preset', '')} on {meta.get('device_label', '')}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _jsonable(value: Any) -> Any:
    """JSON needs string keys: concurrency levels become "1", "2", ..."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """``results.json``, ``results.md`` and ``results.png`` in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json", "md": out_dir / "results.md", "png": out_dir / "results.png"}
    files["json"].write_text(json.dumps(_jsonable(results), indent=2, default=str) + "\n")
    files["md"].write_text(markdown(results) + "\n")
    if results.get("load") or results.get("perf_analyzer"):  # the agent has no plot of its own
        plot(results, files["png"])
    else:
        files.pop("png")
    return files
