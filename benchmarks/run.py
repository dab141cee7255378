"""``python -m benchmarks.run`` (``make bench``): start Triton and the gateway, measure, write the results.

CPU default: tiny random checkpoints (or QWEN3_TTS_CHECKPOINT_DIR), concurrency 1 2 4 8, a few requests per
level; a few minutes. ``--gpu``: full-size 1.7B random weights in bfloat16 on CUDA, concurrency 1 8 32 64.
``--profile``: no servers, the engine in-process with timers around each stage.
See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import sysinfo, targets
from benchmarks.agent import AgentConfig, run_agent
from benchmarks.load import LoadConfig, run_load
from benchmarks.perf import PerfConfig, run_perf
from benchmarks.report import compute_ratios, headline, write_results
from benchmarks.stack import SYNTHESIS_MODELS, Stack, bench_settings, serving_stack
from benchmarks.texts import LONG_TEXTS, SHORT_TEXTS
from qwen3_tts_serving.contract import MODEL_CHECKPOINTS
from qwen3_tts_serving.settings import PROJECT_ROOT, Settings

logger = logging.getLogger("benchmarks")

NO_VOICE_DESIGN = {"full-0.6b"}  # no VoiceDesign release at 0.6B


@dataclass(frozen=True)
class Mode:
    """Defaults of a CPU run and of a GPU run; every one can be overridden by a flag."""

    name: str
    concurrencies: tuple[int, ...]
    models: tuple[str, ...]
    texts: tuple[str, ...]
    max_new_tokens: int
    rounds: int
    profile_streams: int
    profile_frames: int
    threads: int  # OMP_NUM_THREADS for the model processes; 0: leave it


CPU = Mode("cpu", (1, 2, 4, 8), SYNTHESIS_MODELS, SHORT_TEXTS, 24, 2, 4, 24, 1)
GPU = Mode("gpu", (1, 8, 32, 64), ("custom_voice",), LONG_TEXTS, 96, 2, 32, 64, 0)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="results folder (default bench-results/<timestamp>/)")
    parser.add_argument("--gpu", action="store_true", help="GPU run: full-1.7b, cuda, bfloat16, c=1 8 32 64")
    parser.add_argument(
        "--preset",
        choices=("tiny", "full-1.7b", "full-0.6b"),
        help="random-weight checkpoints to build and serve (default: tiny; full-1.7b with --gpu); "
        "ignored when QWEN3_TTS_CHECKPOINT_DIR is set",
    )
    parser.add_argument(
        "-c", "--concurrency", type=int, nargs="+", help="levels (CPU 1 2 4 8, GPU 1 8 32 64)"
    )
    parser.add_argument("--models", nargs="+", choices=SYNTHESIS_MODELS, help="perf_analyzer models")
    parser.add_argument(
        "-n", "--requests", type=int, help="requests per level (default: rounds x concurrency)"
    )
    parser.add_argument(
        "--rounds", type=int, help="waves of requests per level (default 2; at least 2 requests)"
    )
    parser.add_argument(
        "-d", "--duration", type=float, help="load tool: seconds per level instead of a count"
    )
    parser.add_argument("--max-new-tokens", type=int, help="frames per request at most (CPU 24, GPU 96)")
    parser.add_argument("--seed", type=int, default=0, help="request i samples with seed + i")
    parser.add_argument("--texts", choices=("short", "long"), help="sentence set (CPU short, GPU long)")
    parser.add_argument(
        "--transport", choices=("ndjson", "ws"), default="ndjson", help="gateway streaming API"
    )
    parser.add_argument("--gateway", choices=("subprocess", "thread", "none"), default="subprocess")
    parser.add_argument("--skip-perf", action="store_true", help="no perf_analyzer")
    parser.add_argument("--skip-load", action="store_true", help="no load tool")
    parser.add_argument(
        "--agent-tps",
        type=float,
        default=8.0,
        help="voice-agent scenario: words per second each session's text is streamed at (default 8)",
    )
    parser.add_argument(
        "--agent-rounds", type=int, default=1, help="voice-agent sessions per level: rounds x concurrency"
    )
    parser.add_argument("--skip-agent", action="store_true", help="no voice-agent scenario")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request at most")
    parser.add_argument(
        "--keep-exports", action="store_true", help="keep perf_analyzer's raw profile exports"
    )
    parser.add_argument("--profile", action="store_true", help="profile the engine in-process instead")
    parser.add_argument("--profile-streams", type=int, help="streams stepped together (CPU 4, GPU 32)")
    parser.add_argument("--profile-frames", type=int, help="frames per stream (CPU 24, GPU 64)")
    parser.add_argument("--torch-profiler", action="store_true", help="also torch.profiler + a Chrome trace")
    parser.add_argument(
        "--profile-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also profile the package-style baseline (reference code predictor, windowed decoder) and "
        "report the speed-up (default: on)",
    )
    parser.add_argument(
        "--engine-profile",
        action=argparse.BooleanOptionalAction,
        help="after the servers stop, also profile the engine in-process into the results (GPU default: on)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch/OpenMP threads per model process (OMP_NUM_THREADS); CPU default 1, GPU default: unset. "
        "0 leaves the environment as it is",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def _option(value: Any, default: Any) -> Any:
    return default if value is None else value


# ------------------------------------------------------------------------------------------ settings
def mode_settings(args: argparse.Namespace, mode: Mode) -> Settings:
    """Settings from the environment; a GPU run adds cuda / bfloat16 / no repetition stop where unset."""
    settings = Settings()
    if mode is not GPU:
        return settings
    updates: dict[str, Any] = {}
    if settings.device == "auto":
        updates["device"] = "cuda"
    if settings.dtype == "auto":
        updates["dtype"] = "bfloat16"
    if "repetition_window" not in settings.model_fields_set:  # not set in the environment
        updates["repetition_window"] = 0  # lengths set by the text and max_new_tokens only
    return settings.model_copy(update=updates)


def build_checkpoints(preset: str, out_dir: Path, models: Sequence[str]) -> Path:
    """``qwen3-tts-checkpoints --preset P --out DIR --flavours ...`` (kept when already complete)."""
    flavours = sorted({MODEL_CHECKPOINTS[m] for m in models})
    script = Path(sys.executable).parent / "qwen3-tts-checkpoints"
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "qwen3_tts_serving.checkpoints.cli"]
    )
    command += ["--preset", preset, "--out", str(out_dir), "--flavours", *flavours]
    logger.info("building %s checkpoints (%s) in %s", preset, ", ".join(flavours), out_dir)
    started = time.monotonic()
    subprocess.run(command, check=True)
    logger.info("checkpoints ready after %.0f s", time.monotonic() - started)
    return out_dir


def checkpoint_settings(settings: Settings, preset: str, models: Sequence[str]) -> Settings:
    if settings.checkpoint_dir is not None or preset == "tiny":
        return bench_settings(settings)  # QWEN3_TTS_CHECKPOINT_DIR, or the tiny set (built on first use)
    directory = build_checkpoints(preset, settings.cache_dir / "checkpoints" / preset, models)
    return bench_settings(settings, checkpoint_dir=directory)


def checkpoint_preset(directory: Path | None) -> str:
    """The preset recorded in a generated checkpoint's marker, or "external" for real checkpoints."""
    for flavour in ("custom_voice", "base", "voice_design"):
        marker = (directory or Path("/nonexistent")) / flavour / ".complete"
        if marker.is_file():
            try:
                return str(json.loads(marker.read_text()).get("preset", "unknown"))
            except ValueError:
                return "unknown"
    return "external"


def engine_meta(settings: Settings) -> dict[str, Any]:
    """Every engine setting the served models ran with (the same parameters the launcher writes into their
    configs), plus Triton's batching and instance settings."""
    from qwen3_tts_serving.engine.config import engine_parameters
    from qwen3_tts_serving.launcher.repository import resolve_device

    device = resolve_device(settings)
    parameters = engine_parameters(settings, checkpoint_dir=settings.resolved_checkpoint_dir, device=device)
    triton = {
        name: getattr(settings, name)
        for name in ("engines_per_checkpoint", "max_entry_batch", "batch_delay_us")
    }
    return {"resolved_device": device, **triton, **parameters}


def device_label(machine: dict[str, Any], settings: Settings) -> str:
    if settings.device == "cuda" and machine["gpus"]:
        return machine["gpus"][0].get("name", "GPU")
    return f"CPU ({machine['usable_cpus']} cores)"


# ------------------------------------------------------------------------------------------ measuring
def _measure(
    args: argparse.Namespace, mode: Mode, stack: Stack, out_dir: Path, models: Sequence[str]
) -> dict[str, Any]:
    concurrencies = list(_option(args.concurrency, mode.concurrencies))
    texts = {"short": SHORT_TEXTS, "long": LONG_TEXTS}.get(args.texts or "", mode.texts)
    max_new_tokens = _option(args.max_new_tokens, mode.max_new_tokens)
    rounds = _option(args.rounds, mode.rounds)
    results: dict[str, Any] = {}
    if not args.skip_load:
        config = LoadConfig(
            concurrencies=concurrencies,
            triton_url=stack.grpc_url,
            gateway_url=stack.gateway_url,
            requests=args.requests,
            rounds=rounds,
            duration_s=args.duration,
            timeout_s=args.timeout,
            texts=texts,
            max_new_tokens=max_new_tokens,
            seed=args.seed,
            transport=args.transport,
            api_key=stack.settings.api_keys[0] if stack.settings.api_keys else None,
            cpu_pids=stack.cpu_pids,
            metrics_url=stack.metrics_url,
        )
        results["load"] = asyncio.run(run_load(config))
    if not args.skip_agent:
        agent = AgentConfig(
            concurrencies=concurrencies,
            triton_url=stack.grpc_url,
            words_per_s=args.agent_tps,
            rounds=args.agent_rounds,
            texts=texts,
            seed=args.seed,
            timeout_s=args.timeout,
        )
        results["agent"] = asyncio.run(run_agent(agent))
    if models:
        perf = PerfConfig(
            grpc_url=stack.grpc_url,
            models=models,
            concurrencies=concurrencies,
            out_dir=out_dir / "perf_analyzer",
            requests=args.requests,
            rounds=rounds,
            texts=texts,
            max_new_tokens=max_new_tokens,
            seed=args.seed,
            timeout_s=args.timeout,
            keep_exports=args.keep_exports,
            cpu_pids={"triton": stack.triton.pid},
        )
        try:
            results["perf_analyzer"] = run_perf(perf)
        except FileNotFoundError as exc:  # no perf_analyzer on this machine: keep the load-tool figures
            logger.error("perf_analyzer skipped: %s", exc)
            results["perf_analyzer_skipped"] = str(exc)
    return results


def perf_models(args: argparse.Namespace, mode: Mode, preset: str) -> list[str]:
    """The models perf_analyzer measures (full-0.6b has no voice_design checkpoint)."""
    models = list(dict.fromkeys(_option(args.models, mode.models)))
    if preset in NO_VOICE_DESIGN and "voice_design" in models:
        logger.warning("%s has no voice_design checkpoint; skipping that model", preset)
        models.remove("voice_design")
    return models


def served_models(perf: Sequence[str], with_load: bool, with_agent: bool = False) -> list[str]:
    """perf_analyzer's models, custom_voice for the load tool, custom_voice_session for the voice agent."""
    models = (["custom_voice"] if with_load and "custom_voice" not in perf else []) + list(perf)
    return models + (["custom_voice_session"] if with_agent else [])


def is_full_gpu_run(mode: Mode, settings: Settings) -> bool:
    """Whether the targets apply: a GPU run of the full 1.7B model (or of real checkpoints)."""
    preset = checkpoint_preset(settings.checkpoint_dir)
    return mode is GPU and settings.device == "cuda" and preset in ("full-1.7b", "external")


def _meta(mode: Mode, settings: Settings, machine: dict[str, Any], started: float) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "duration_s": time.time() - started,
        "mode": mode.name,
        "preset": checkpoint_preset(settings.checkpoint_dir),
        "checkpoint_dir": str(settings.checkpoint_dir),
        "device_label": device_label(machine, settings),
        "engine": engine_meta(settings),
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "machine": machine,
        "versions": sysinfo.versions(),
        "commit": sysinfo.commit(),
        "command": sys.argv,
    }


def run_benchmarks(args: argparse.Namespace, mode: Mode, out_dir: Path) -> dict[str, Any]:
    preset = _option(args.preset, "full-1.7b" if mode is GPU else "tiny")
    base = mode_settings(args, mode)
    effective = checkpoint_preset(base.checkpoint_dir) if base.checkpoint_dir is not None else preset
    perf = [] if args.skip_perf else perf_models(args, mode, effective)
    models = served_models(perf, with_load=not args.skip_load, with_agent=not args.skip_agent)
    settings = checkpoint_settings(base, preset, models)
    machine = sysinfo.machine()
    started = time.time()
    gateway = "none" if args.skip_load else args.gateway
    with serving_stack(settings, work_dir=out_dir / "logs", models=models, gateway=gateway) as stack:
        measured = _measure(args, mode, stack, out_dir, perf)
    results: dict[str, Any] = {"meta": _meta(mode, settings, machine, started), **measured}
    if _option(args.engine_profile, mode is GPU):
        profiled = run_profile(args, mode, out_dir)
        profile = profiled["result"]
        profile.pop("torch_profiler_table", None)
        if "baseline" in profiled:
            profile["baseline"] = profiled["baseline"]
            profile["speedup_over_baseline"] = profiled["speedup_over_baseline"]
        results["profile"] = profile
    results["ratios"] = compute_ratios(results.get("load"), results.get("perf_analyzer"))
    paths = results.get("load", {}).get("paths", {})
    results["targets"] = targets.evaluate(paths, is_full_gpu_run(mode, settings))
    return results


def run_profile(args: argparse.Namespace, mode: Mode, out_dir: Path) -> dict[str, Any]:
    from benchmarks.profile import BASELINE, ProfileConfig, profile_engine

    preset = _option(args.preset, "full-1.7b" if mode is GPU else "tiny")
    model = (args.models or ["custom_voice"])[0]
    settings = checkpoint_settings(mode_settings(args, mode), preset, [model])
    config = ProfileConfig(
        checkpoint_root=settings.resolved_checkpoint_dir,
        model=model,
        streams=_option(args.profile_streams, mode.profile_streams),
        frames=_option(args.profile_frames, mode.profile_frames),
        device="cpu" if settings.device == "auto" and mode is CPU else settings.device,
        dtype=settings.dtype,
        attn_implementation=settings.attn_implementation,
        seed=args.seed,
        torch_profiler=args.torch_profiler,
        trace_path=out_dir / "trace.json" if args.torch_profiler else None,
    )
    profiled: dict[str, Any] = {
        "config": {k: str(v) for k, v in vars(config).items()},
        "result": profile_engine(config),
    }
    if args.profile_baseline:
        plain = dataclasses.replace(config, torch_profiler=False, trace_path=None, **BASELINE)
        baseline = profile_engine(plain)
        profiled["baseline"] = baseline
        profiled["speedup_over_baseline"] = baseline["ms_per_step"] / profiled["result"]["ms_per_step"]
    return profiled


def limit_threads(count: int) -> None:
    """Torch/OpenMP threads of the processes started from here (Triton's model stubs inherit the
    environment). Every stub otherwise starts one thread per core, and on a CPU shared by several models
    (and other work) the oversubscribed OpenMP threads spin: ten times slower steps were seen."""
    if count > 0:
        for name in THREAD_VARIABLES:
            os.environ[name] = str(count)
        logger.info("OMP_NUM_THREADS=%d for the model processes", count)


def default_out_dir() -> Path:
    return PROJECT_ROOT / "bench-results" / time.strftime("%Y%m%d-%H%M%S")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "qwen_tts"):  # one line per request / per model load otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so that Triton and the gateway are always stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    mode = GPU if args.gpu else CPU
    out_dir = args.out or default_out_dir()
    limit_threads(_option(args.threads, mode.threads))
    if args.profile:
        return _profile_main(args, mode, out_dir)
    results = run_benchmarks(args, mode, out_dir)
    files = write_results(results, out_dir)
    print("\n".join(headline(results)))
    print("\nResults: " + ", ".join(str(path) for path in files.values()))
    errors = sum(
        s["errors"] for levels in results.get("load", {}).get("paths", {}).values() for s in levels.values()
    ) + sum(s["errors"] for s in results.get("agent", {}).get("levels", {}).values())
    return 1 if errors else 0


def _profile_main(args: argparse.Namespace, mode: Mode, out_dir: Path) -> int:
    from benchmarks.profile import BASELINE, format_breakdown

    out_dir.mkdir(parents=True, exist_ok=True)
    profile = run_profile(args, mode, out_dir)
    result = profile["result"]
    table = result.pop("torch_profiler_table", None)
    (out_dir / "profile.json").write_text(json.dumps(profile, indent=2, default=str) + "\n")
    print("\n".join(format_breakdown(result)))
    if "baseline" in profile:
        print("\nbaseline (" + ", ".join(f"{k}={v}" for k, v in BASELINE.items()) + "):")
        print("\n".join(format_breakdown(profile["baseline"])))
        print(f"\nspeed-up over the baseline: {profile['speedup_over_baseline']:.2f}x per step")
    if table:
        print(table)
    print(f"\nResults: {out_dir / 'profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
