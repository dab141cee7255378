"""Engine tunables, read from a Triton model's ``parameters`` (strings) and checked once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..settings import Settings
from .requests import RequestLimits

CODE_PREDICTOR_MODES = ("auto", "reference", "static", "cuda_graphs")
DECODER_MODES = ("streaming", "windowed")
CUDA_GRAPH_MODES = ("auto", "on", "off")


# Where each engine setting gets its one default: the Settings field of the same name (the README documents
# it there). A few differ in name or form.
_SETTING_NAMES = {"drain_timeout_s": "triton_drain_timeout_s"}


def _setting(name: str) -> Any:
    """The default of the setting behind engine field ``name`` (one declaration: settings.Settings)."""
    default = Settings.model_fields[_SETTING_NAMES.get(name, name)].get_default(call_default_factory=True)
    return format_rates(default) if isinstance(default, dict) else default


def format_rates(rates: Mapping[str, float]) -> str:
    """``{"chinese": 6.0}`` -> ``"chinese=6.0"``: a per-language map as one model parameter."""
    return ",".join(f"{language}={rate}" for language, rate in sorted(rates.items()))


def engine_parameters(settings: Settings, *, checkpoint_dir: Path, device: str) -> dict[str, str]:
    """Every ``EngineConfig`` field as a model parameter string, from ``settings`` (the launcher writes them
    into each model's config.pbtxt; ``EngineConfig.from_parameters`` reads them back)."""
    values: dict[str, object] = {"checkpoint_dir": checkpoint_dir, "device": device}
    for f in fields(EngineConfig):
        if f.name not in values:
            value = getattr(settings, _SETTING_NAMES.get(f.name, f.name))
            values[f.name] = format_rates(value) if isinstance(value, dict) else value
    return {name: str(value) for name, value in values.items()}


@dataclass(frozen=True)
class EngineConfig:
    """What one model instance's engine runs with. Every field but ``checkpoint_dir`` is a setting
    (``Settings``, same name unless ``_SETTING_NAMES`` says otherwise) and takes its default from there; the
    launcher writes every field into each model's ``parameters`` (``engine_parameters``)."""

    checkpoint_dir: Path
    device: str = _setting("device")
    dtype: str = _setting("dtype")
    attn_implementation: str = _setting("attn_implementation")
    cpu_threads: int = _setting("cpu_threads")
    first_chunk_frames: int = _setting("first_chunk_frames")
    chunk_frames: int = _setting("chunk_frames")
    decoder_left_context_frames: int = _setting("decoder_left_context_frames")
    max_active_streams: int = _setting("max_active_streams")
    max_queued_streams: int = _setting("max_queued_streams")
    max_queue_wait_s: float = _setting("max_queue_wait_s")
    drain_timeout_s: float = _setting("drain_timeout_s")
    realtime_step_budget_s: float = _setting("realtime_step_budget_s")
    max_new_tokens: int = _setting("max_new_tokens")
    frames_per_char: float = _setting("frames_per_char")
    frames_per_char_by_language: str = _setting("frames_per_char_by_language")
    repetition_window: int = _setting("repetition_window")
    max_text_length: int = _setting("max_text_length")
    min_ref_audio_seconds: float = _setting("min_ref_audio_seconds")
    max_ref_audio_seconds: float = _setting("max_ref_audio_seconds")
    session_idle_timeout_s: float = _setting("session_idle_timeout_s")
    session_lookahead_tokens: int = _setting("session_lookahead_tokens")
    primed_decoder_cache_size: int = _setting("primed_decoder_cache_size")
    decoder_mode: str = _setting("decoder_mode")
    code_predictor: str = _setting("code_predictor")
    cuda_graph_batch_sizes: str = _setting("cuda_graph_batch_sizes")
    cuda_graphs: str = _setting("cuda_graphs")
    slot_max_length: int = _setting("slot_max_length")
    attention_length_buckets: str = _setting("attention_length_buckets")
    prefill_tokens_per_step: int = _setting("prefill_tokens_per_step")
    voice_prompt_batch: int = _setting("voice_prompt_batch")
    voice_prompt_cache_size: int = _setting("voice_prompt_cache_size")
    voice_prompt_step_share: float = _setting("voice_prompt_step_share")
    fault_injection: bool = _setting("fault_injection")

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> EngineConfig:
        """Build from string parameters; raise ValueError naming every bad or missing one."""
        values: dict[str, object] = {}
        errors: list[str] = []
        for f in fields(cls):
            if f.name not in parameters:
                if f.name == "checkpoint_dir":
                    errors.append("checkpoint_dir is missing")
                continue
            raw = parameters[f.name]
            try:
                values[f.name] = _convert(f.default if f.name != "checkpoint_dir" else Path(), raw)
            except ValueError:
                errors.append(f"{f.name}={raw!r} is not a valid {type(f.default).__name__}")
        if errors:
            raise ValueError("; ".join(errors))
        config = cls(**values)  # type: ignore[arg-type]
        config.check()
        return config

    def check(self) -> None:
        problems = []
        if not self.checkpoint_dir.is_dir():
            problems.append(f"checkpoint_dir {self.checkpoint_dir} is not a directory")
        positive = (
            "first_chunk_frames",
            "chunk_frames",
            "max_active_streams",
            "max_new_tokens",
            "max_queued_streams",
            "prefill_tokens_per_step",
            "voice_prompt_batch",
        )
        for name in positive:
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.max_queue_wait_s <= 0:
            problems.append("max_queue_wait_s must be > 0")
        if not 0 <= self.voice_prompt_step_share <= 4:
            problems.append("voice_prompt_step_share must be in [0, 4] (0 turns pacing off)")
        if self.realtime_step_budget_s < 0:
            problems.append("realtime_step_budget_s must be >= 0 (0 turns it off)")
        for name in (
            "decoder_left_context_frames",
            "repetition_window",
            "primed_decoder_cache_size",
            "voice_prompt_cache_size",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device {self.device!r}; valid: auto, cpu, cuda, cuda:N")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            problems.append(f"dtype {self.dtype!r}; valid: auto, float32, bfloat16, float16")
        if self.decoder_mode not in DECODER_MODES:
            problems.append(f"decoder_mode {self.decoder_mode!r}; valid: {', '.join(DECODER_MODES)}")
        if self.code_predictor not in CODE_PREDICTOR_MODES:
            valid = ", ".join(CODE_PREDICTOR_MODES)
            problems.append(f"code_predictor {self.code_predictor!r}; valid: {valid}")
        try:
            self.graph_buckets  # noqa: B018 - parsed here so a typo fails at start-up
        except ValueError:
            problems.append(
                f"cuda_graph_batch_sizes {self.cuda_graph_batch_sizes!r}; use positive integers: 1,2,4,..."
            )
        if self.cuda_graphs not in CUDA_GRAPH_MODES:
            problems.append(f"cuda_graphs {self.cuda_graphs!r}; valid: {', '.join(CUDA_GRAPH_MODES)}")
        if self.slot_max_length < 2:
            problems.append("slot_max_length must be >= 2 (prompt + frames of one stream, in talker tokens)")
        try:
            self.length_buckets  # noqa: B018 - parsed here so a typo fails at start-up
        except ValueError:
            buckets = self.attention_length_buckets
            problems.append(f"attention_length_buckets {buckets!r}; use positive integers: 128,256,...")
        try:
            self.language_rates  # noqa: B018 - parsed here so a typo fails at start-up
        except ValueError:
            problems.append(
                f"frames_per_char_by_language {self.frames_per_char_by_language!r}; use lang=rate,..."
            )
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def limits(self) -> RequestLimits:
        return RequestLimits(
            max_text_length=self.max_text_length,
            min_ref_audio_seconds=self.min_ref_audio_seconds,
            max_ref_audio_seconds=self.max_ref_audio_seconds,
        )

    def chunk_size(self, sent: int) -> int:
        """Frames in chunk number ``sent``: the first size twice, then doubling up to ``chunk_frames``
        (1, 1, 2, 4, 4, ... by default). The second chunk needs only as many steps as the first lasts in
        frames, so one step of up to a frame (80 ms) between them leaves no gap, and later chunks keep the
        buffer ahead at steps up to ~45 ms: first audio after one frame, with more margin than 2, 4, 4."""
        return max(1, min(self.chunk_frames, self.first_chunk_frames << min(max(sent - 1, 0), 16)))

    @property
    def decoder_chunk_lengths(self) -> list[int]:
        """Chunk lengths in frames the codec decoder is captured for: every chunk size and, up to 8 frames,
        every shorter last chunk (longer odd ones run eagerly, once per stream)."""
        sizes = {self.chunk_size(sent) for sent in range(18)}
        return sorted(sizes | set(range(1, min(self.chunk_frames, 8) + 1)))

    @property
    def graph_buckets(self) -> list[int]:
        """Batch sizes the frame step and the codec decoder are shaped (and captured) for: those listed
        below max_active_streams, and it."""
        return _buckets(self.cuda_graph_batch_sizes, self.max_active_streams, "batch sizes")

    @property
    def length_buckets(self) -> list[int]:
        """Key lengths the frame step is shaped (and captured) for: those listed below slot_max_length,
        and it."""
        return _buckets(self.attention_length_buckets, self.slot_max_length, "key lengths")

    @property
    def language_rates(self) -> dict[str, float]:
        rates = {}
        for item in filter(None, (part.strip() for part in self.frames_per_char_by_language.split(","))):
            language, _, rate = item.partition("=")
            rates[language.strip().lower()] = float(rate)
        return rates

    def frame_budget(self, text: str, requested: int, language: str = "auto") -> int:
        """Frames a request may take: its own max_new_tokens, the model limit and a text-length cap, so
        a generation that never says end-of-speech stops in proportion to what it had to say."""
        rates = self.language_rates
        if language == "auto":
            rate = max([self.frames_per_char, *rates.values()])
        else:
            rate = rates.get(language, self.frames_per_char)
        text_cap = int(rate * len(text)) + 24
        return max(1, min(requested, self.max_new_tokens, text_cap))


def _convert(default: object, raw: str) -> object:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw


def _buckets(listing: str, largest: int, what: str) -> list[int]:
    """The sizes of a comma-separated ``listing`` below ``largest``, and ``largest``."""
    sizes = {int(part) for part in listing.split(",") if part.strip()}
    if any(size < 1 for size in sizes):
        raise ValueError(f"{what} must be positive")
    return sorted({size for size in sizes if size < largest} | {largest})
