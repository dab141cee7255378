"""How long voice-prompt extraction pauses the streams of the Base engine it shares (issue: "a voice prompt
extracted while streams run does not stall them by more than one step").

A Base engine steps ``--streams`` clone streams on its own thread; reference clips of each ``--clip-seconds``
are then extracted twice: by the engine model's worker beside the running batch, paced by its steps (how it
serves), and on the engine thread itself (what a server without the worker would do). Each extraction
follows a quiet window of the batch alone; the figure that counts is what the extraction added to the
longest pause between two steps, against that quiet window (whose longest pause already holds the batch's
own slow steps, such as those that decode a chunk), in median steps. Runs in-process (no Triton), on the
CPU (ratios only) or a GPU (absolute figures):

    python -m benchmarks.prompt_stall [--checkpoint-dir .cache/checkpoints/tiny/base] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_tts_serving.settings import Settings

SAMPLE_RATE = 24000
TEXT = "A long sentence that keeps the running batch busy while the clip is encoded. " * 6


class StepTimes:
    """An engine observer that notes when each step ended (perf_counter)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def step_done(self, **_: object) -> None:
        self.times.append(time.perf_counter())

    def first_audio(self, seconds: float) -> None:
        pass

    def finished(self, reason: str) -> None:
        pass

    def idle(self, **_: object) -> None:
        pass


class QuietSink:
    """A stream's sink that keeps only its errors; ``on_end`` runs when its stream has ended."""

    def __init__(self, on_end: Callable[[], None] | None = None) -> None:
        self.errors: list[Exception] = []
        self.on_end = on_end

    def send(self, chunk: Any) -> None:
        if chunk.is_last and self.on_end is not None:
            self.on_end()

    def fail(self, error: Exception) -> None:
        self.errors.append(error)

    def is_cancelled(self) -> bool:
        return False


def longest_pause(times: list[float], started: float, ended: float) -> float:
    """The longest time without a step ending, from the last step before ``started`` to ``ended``."""
    before = max(t for t in times if t < started)
    inside = [t for t in times if started <= t <= ended]
    return float(np.max(np.diff([before, *inside, ended])))


def clip(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 200 * t) * np.sin(2 * np.pi * 1.3 * t)).astype(np.float32)


def measure(
    checkpoint_dir: Path,
    device: str,
    streams: int,
    clip_seconds: list[float],
    step_share: float,
    repeats: int = 3,
    on_clip: Callable[[dict[str, Any], str], None] | None = None,
) -> dict[str, Any]:
    """The figures for every clip length; ``on_clip(results, clip)`` once each clip's are in (the device
    call's outer timeout may cut the run: what was measured by then must already be written)."""
    from qwen3_tts_serving.engine.config import EngineConfig
    from qwen3_tts_serving.engine.engine import StreamingEngine
    from qwen3_tts_serving.engine.loading import load_model
    from qwen3_tts_serving.engine.observer import Observers
    from qwen3_tts_serving.engine.requests import Capability, SynthesisRequest
    from qwen3_tts_serving.engine.voice_prompts import (
        VoicePromptWorker,
        extract_voice_prompts,
        validate_clip,
    )

    config = EngineConfig(
        checkpoint_dir=checkpoint_dir,
        device=device,
        realtime_step_budget_s=0.0,
        frames_per_char=50.0,
        repetition_window=0,  # random weights loop: the streams must keep speaking through every window
        max_active_streams=max(streams, 1),
    )
    tts = load_model(config, Capability.VOICE_CLONE)
    steps = StepTimes()
    # Wired as the engine model wires it: the worker paces itself by the engine's steps.
    # No prompt cache: every repeat of a clip is extracted again.
    worker = VoicePromptWorker(tts, config.limits, step_share=step_share, cache_size=0)
    engine = StreamingEngine(tts, Capability.VOICE_CLONE, config, Observers(steps, worker.pacer))
    # The streams speak with a voice prompt extracted once: a clip in each would be encoded at admission,
    # on the engine thread, and lengthen the steps being measured.
    reference = SynthesisRequest(
        capability=Capability.VOICE_CLONE,
        text="",
        ref_audio=clip(3.0),
        ref_sample_rate=SAMPLE_RATE,
        x_vector_only=True,
    )
    (voice,) = extract_voice_prompts(tts, [reference])
    speech = SynthesisRequest(
        capability=Capability.VOICE_CLONE,
        text=TEXT,
        speaker_embedding=voice.speaker_embedding,
        x_vector_only=True,
        sampling={"do_sample": False, "max_new_tokens": 4000},
    )
    sinks: list[QuietSink] = []

    def speak() -> None:
        """A new stream; when it ends (the random weights say end-of-speech after a few hundred frames) the
        next one starts, so ``streams`` keep stepping through every window."""
        sinks.append(QuietSink(on_end=speak))
        engine.submit([engine.make_stream(engine.validate(speech), sinks[-1])])

    for _ in range(streams):
        speak()
    engine.start()
    results: dict[str, Any] = {
        "streams": streams,
        "device": device,
        "step_share": step_share,
        "repeats": repeats,
        "clips": {},
    }

    def extract(how: str, request: SynthesisRequest, quiet_s: float) -> dict[str, float]:
        """Let the batch run undisturbed for ``quiet_s``, then extract; the quiet window just before is the
        baseline (its longest pause holds the batch's own slow steps, e.g. those that decode a chunk)."""
        time.sleep(quiet_s)
        done = threading.Event()
        started = time.perf_counter()
        if how == "beside":
            worker.submit(request, lambda _: done.set())
        else:
            engine.run_in_engine(lambda: (extract_voice_prompts(tts, [request]), done.set()))
        done.wait(600)
        ended = time.perf_counter()
        time.sleep(2 * step_s)  # the step that was running when it ended
        window = ended - started
        until = ended + step_s if how == "inline" else ended  # to the first step after it
        return {
            "extraction_ms": window * 1000,
            "longest_pause_ms": longest_pause(steps.times, started, until) * 1000,
            "quiet_longest_pause_ms": longest_pause(steps.times, started - window, started) * 1000,
            "steps": sum(started <= t <= ended for t in steps.times),
            "quiet_steps": sum(started - window <= t < started for t in steps.times),
        }

    try:
        while len(steps.times) < 30:
            time.sleep(0.01)
        step_s = statistics.median(np.diff(steps.times[-20:]))
        results["median_step_ms"] = step_s * 1000
        quiet_s = 0.5
        for seconds in clip_seconds:
            request = SynthesisRequest(
                capability=Capability.VOICE_CLONE,
                text="",
                ref_audio=clip(seconds),
                ref_sample_rate=SAMPLE_RATE,
                ref_text="A reference transcript.",
            )
            checked = validate_clip(request, engine.spec, config.limits)
            runs: dict[str, list[dict[str, float]]] = {"beside": [], "inline": []}
            for _ in range(repeats):
                for how, figures_of_runs in runs.items():
                    figures = extract(how, checked, quiet_s)
                    # What the extraction added to the batch's longest wait between two frames, in steps.
                    figures["added_pause_steps"] = (
                        figures["longest_pause_ms"] - figures["quiet_longest_pause_ms"]
                    ) / results["median_step_ms"]
                    figures_of_runs.append(figures)
                    quiet_s = max(quiet_s, 1.5 * figures["extraction_ms"] / 1000)
            # Each figure is the median over the repeats (a 2-core machine's scheduler adds noise to each).
            results["clips"][f"{seconds:g}"] = {
                how: {key: statistics.median(f[key] for f in done) for key in done[0]} | {"runs": done}
                for how, done in runs.items()
            }
            if on_clip is not None:
                on_clip(results, f"{seconds:g}")
        results["stream_errors"] = [str(e) for sink in sinks for e in sink.errors]
    finally:
        engine.stop()
        worker.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=settings.resolved_checkpoint_dir / "base",
        help="a Base checkpoint",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--streams", type=int, default=8, help="clone streams stepping meanwhile")
    parser.add_argument("--clip-seconds", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument(
        "--step-share",
        type=float,
        default=settings.voice_prompt_step_share,
        help="the worker's pacing (voice_prompt_step_share; 0: unpaced)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="extractions per clip and place (medians)")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    def save(results: dict[str, Any], *, complete: bool) -> None:
        if args.out:
            args.out.write_text(json.dumps({**results, "complete": complete}, indent=2) + "\n")

    def clip_done(results: dict[str, Any], seconds: str) -> None:
        if len(results["clips"]) == 1:
            print(
                f"median step {results['median_step_ms']:.1f} ms, {args.streams} streams on {args.device}, "
                f"worker paced at {args.step_share:g} of a step; medians of {args.repeats} extractions"
            )
            print(
                "clip s  where        extraction ms  steps (quiet)  longest pause ms (quiet)"
                "  added pause, steps"
            )
        for how, f in results["clips"][seconds].items():
            where = "beside" if how == "beside" else "engine thread"
            print(
                f"{seconds:>6}  {where:<13}  {f['extraction_ms']:>11.0f}"
                f"  {f['steps']:>5} ({f['quiet_steps']:>5})"
                f"  {f['longest_pause_ms']:>12.1f} ({f['quiet_longest_pause_ms']:>6.1f})"
                f"  {f['added_pause_steps']:>17.1f}",
                flush=True,
            )
        save(results, complete=False)  # "complete": false until every clip is in

    results = measure(
        args.checkpoint_dir,
        args.device,
        args.streams,
        args.clip_seconds,
        args.step_share,
        args.repeats,
        on_clip=clip_done,
    )
    save(results, complete=True)
    return 1 if results["stream_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
