"""Where an engine step spends its time: the engine in-process, timers around each stage.

Stages (exclusive times: a stage's time excludes the stages timed inside it):

- ``prefill``: building prompts and admitting requests, except its talker forward (``prefill/talker``);
- ``frame``: the device step (``engine.frame_step``) for one frame of every active stream, except the
  stages below timed inside it; with CUDA graphs the step is one replay and all of it counts here;
- ``talker``: the talker's step on the slot cache (eager frame steps);
- ``codec_head``: the talker's codebook-0 logits;
- ``sampling``: codebook-0 logits processors and sampling (eager frame steps);
- ``code_predictor``: the 15 small autoregressive steps for codebooks 1-15 (eager frame steps);
- ``decoder``: the speech-tokenizer decoder for the chunks that are due;
- ``python``: everything else in ``step()`` (bookkeeping, embeddings, masks, sending chunks).

On a GPU every timer synchronizes the device, which serializes the work and adds a little time; the
shares are what to read. ``torch_profiler=True`` also runs ``torch.profiler`` and writes a Chrome trace.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGES = (
    "prefill", "prefill/talker", "frame", "talker", "codec_head", "sampling", "code_predictor", "decoder",
)  # fmt: skip


@dataclass
class StageTimers:
    """Exclusive wall time per stage; nested timed calls are charged to their own stage."""

    synchronize: Callable[[], None] = lambda: None
    totals: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _stack: list[list[Any]] = field(default_factory=list)  # [name, start, child time]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        inside_prefill = bool(self._stack) and self._stack[-1][0] == "prefill"
        label = f"prefill/{name}" if inside_prefill and name == "talker" else name
        self.synchronize()
        self._stack.append([label, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            self.synchronize()
            label, start, children = self._stack.pop()
            elapsed = time.perf_counter() - start
            self.totals[label] += elapsed - children
            self.calls[label] += 1
            if self._stack:
                self._stack[-1][2] += elapsed

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed


def instrument(engine: Any, timers: StageTimers) -> None:
    """Put timers around the engine's stages (instance attributes shadow the methods)."""
    talker, frame_step = engine._talker, engine.frame_step
    engine.step = timers.wrap("step", engine.step)
    engine._admit = timers.wrap("prefill", engine._admit)
    # A captured frame step replays as a whole: the stages inside it are only seen in eager steps.
    frame_step.launch = timers.wrap("frame", frame_step.launch)
    frame_step.predictor.predict = timers.wrap("code_predictor", frame_step.predictor.predict)
    frame_step._choose_cb0 = timers.wrap("sampling", frame_step._choose_cb0)
    frame_step._talker_step = timers.wrap("talker", frame_step._talker_step)
    engine.decoder.decode = timers.wrap("decoder", engine.decoder.decode)
    talker.model.forward = timers.wrap("talker", talker.model.forward)  # prefill: reported as prefill/talker
    talker.codec_head.forward = timers.wrap("codec_head", talker.codec_head.forward)


def breakdown(timers: StageTimers, steps: int) -> dict[str, dict[str, float]]:
    """Per stage: total ms, ms per engine step, share of the step time; ``python`` is what is left."""
    total = timers.totals.get("step", 0.0) + sum(v for k, v in timers.totals.items() if k != "step")
    stages = {name: timers.totals.get(name, 0.0) for name in STAGES}
    stages["python"] = timers.totals.get("step", 0.0)
    return {
        name: {
            "total_ms": seconds * 1000,
            "ms_per_step": seconds * 1000 / steps if steps else 0.0,
            "share": seconds / total if total else 0.0,
        }
        for name, seconds in stages.items()
    }


@dataclass(frozen=True)
class ProfileConfig:
    checkpoint_root: Path
    model: str = "custom_voice"
    streams: int = 4
    frames: int = 48
    device: str = "cpu"
    dtype: str = "auto"
    attn_implementation: str = "auto"
    seed: int = 0
    torch_profiler: bool = False
    trace_path: Path | None = None
    code_predictor: str = "auto"
    decoder_mode: str = "streaming"


# The engine as the package runs the same work: the predictor's own forward per step, and every chunk
# re-decoded with left context. The profile reports the default engine's speed-up over it.
BASELINE = {"code_predictor": "reference", "decoder_mode": "windowed"}


def _request(model: str, text: str, frames: int, seed: int) -> Any:
    from qwen3_tts_serving.engine.requests import Capability, SynthesisRequest

    sampling = {"max_new_tokens": frames, "seed": seed}
    if model == "voice_design":
        return SynthesisRequest(
            capability=Capability.VOICE_DESIGN, text=text, instruct="a calm voice", sampling=sampling
        )
    return SynthesisRequest(capability=Capability.CUSTOM_VOICE, text=text, speaker="ryan", sampling=sampling)


def _engine(config: ProfileConfig) -> Any:
    from qwen3_tts_serving.contract import MODEL_CHECKPOINTS
    from qwen3_tts_serving.engine.config import EngineConfig
    from qwen3_tts_serving.engine.engine import StreamingEngine
    from qwen3_tts_serving.engine.loading import load_model
    from qwen3_tts_serving.engine.requests import Capability

    if config.model not in ("custom_voice", "voice_design"):
        raise ValueError("the profiler runs custom_voice or voice_design")
    capability = Capability(config.model)
    engine_config = EngineConfig(
        checkpoint_dir=config.checkpoint_root / MODEL_CHECKPOINTS[config.model],
        device=config.device,
        dtype=config.dtype,
        attn_implementation=config.attn_implementation,
        max_new_tokens=config.frames,
        frames_per_char=1000.0,  # the frame count is the request's max_new_tokens, not the text's length
        repetition_window=0,
        code_predictor=config.code_predictor,
        decoder_mode=config.decoder_mode,
    )
    return StreamingEngine(load_model(engine_config, capability), capability, engine_config)


def _run(engine: Any, config: ProfileConfig, streams: int, frames: int) -> list[Any]:
    from benchmarks.texts import LONG_TEXTS
    from qwen3_tts_serving.engine.streams import CollectingSink

    sinks = [CollectingSink() for _ in range(streams)]
    requests = [
        _request(config.model, LONG_TEXTS[i % len(LONG_TEXTS)], frames, config.seed + i)
        for i in range(streams)
    ]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)])
    engine.run_until_idle()
    for sink in sinks:
        if sink.error is not None:
            raise RuntimeError(f"profiled request failed: {sink.error}")
    return sinks


def profile_engine(config: ProfileConfig) -> dict[str, Any]:
    """Warm up, then run ``streams`` requests of up to ``frames`` frames together with stage timers."""
    import torch

    engine = _engine(config)
    cuda = engine._device.type == "cuda"
    _run(engine, config, 1, 4)  # warm-up: kernels, allocator, lazy initialisation
    timers = StageTimers(
        synchronize=functools.partial(torch.cuda.synchronize, engine._device) if cuda else (lambda: None)
    )
    instrument(engine, timers)
    steps_before, frames_before = engine.stats.steps, engine.stats.frames
    started = time.perf_counter()
    with _maybe_torch_profiler(config) as profiler:
        sinks = _run(engine, config, config.streams, config.frames)
    elapsed = time.perf_counter() - started
    steps = engine.stats.steps - steps_before
    frames = engine.stats.frames - frames_before
    audio_s = sum(sink.audio().size for sink in sinks) / engine.sample_rate
    result: dict[str, Any] = {
        "model": config.model,
        "code_predictor": type(engine.frame_step.predictor).__name__,
        "frame_graphs": engine.frame_step.graphed,
        "decoder": type(engine.decoder).__name__,
        "device": str(engine._device),
        "dtype": str(next(engine._talker.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "streams": config.streams,
        "steps": steps,
        "frames": frames,
        "elapsed_s": elapsed,
        "ms_per_step": elapsed * 1000 / steps if steps else None,
        "frames_per_s": frames / elapsed if elapsed else None,
        "audio_s": audio_s,
        "rtf": elapsed / audio_s if audio_s else None,
        "finish_reasons": sorted({sink.finish_reason for sink in sinks}),
        "stages": breakdown(timers, steps),
    }
    if profiler is not None:
        result["torch_profiler_table"] = profiler.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=20
        )
    return result


@contextmanager
def _maybe_torch_profiler(config: ProfileConfig) -> Iterator[Any]:
    if not config.torch_profiler:
        yield None
        return
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if config.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=False) as profiler:
        yield profiler
    if config.trace_path is not None:
        profiler.export_chrome_trace(str(config.trace_path))
        logger.info("torch.profiler trace written to %s", config.trace_path)


def format_breakdown(result: dict[str, Any]) -> list[str]:
    """The profile as lines of text (the CLI prints them)."""
    lines = [
        f"engine profile: {result['model']} on {result['device']} ({result['dtype']}), {result['streams']} "
        f"streams, {result['steps']} steps, {result['frames']} frames in {result['elapsed_s']:.2f} s "
        f"({result['ms_per_step']:.1f} ms/step, RTF {result['rtf']:.3f})",
        f"  {result['code_predictor']}, {result['decoder']}",
        f"  {'stage':16s} {'total ms':>10s} {'ms/step':>9s} {'share':>7s}",
    ]
    for name, figures in result["stages"].items():
        lines.append(
            f"  {name:16s} {figures['total_ms']:10.1f} {figures['ms_per_step']:9.2f} {figures['share']:7.1%}"
        )
    return lines
