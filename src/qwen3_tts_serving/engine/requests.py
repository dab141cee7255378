"""What a synthesis request is, and the checks it must pass before it may join a batch.

Nothing here needs torch or Triton: the Triton adapter builds these from tensors, the tests build them
directly, and a request that fails ``validate`` never reaches the GPU, so it cannot break a batch.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..sampling_ranges import REF_SAMPLE_RATES, SAMPLING_RANGES, SUBTALKER_RANGES, check_sampling_value
from ..text_rules import is_blank

NUM_CODE_GROUPS = 16
CODEBOOK_SIZE = 2048
SAMPLE_RATE = 24000


class Capability(str, enum.Enum):
    CUSTOM_VOICE = "custom_voice"
    VOICE_DESIGN = "voice_design"
    VOICE_CLONE = "voice_clone"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # the model ended speech with its end-of-speech code
    LENGTH = "length"  # the frame budget (max_new_tokens or the text-length cap) ran out
    REPETITION = "repetition"  # codebook 0 looped on a short pattern
    CANCELLED = "cancelled"  # the client went away
    IDLE_TIMEOUT = "idle_timeout"  # a session waited for text longer than its idle timeout


class InvalidRequestError(ValueError):
    """The request itself is wrong; the message is safe to show to the caller."""


class GenerationFaultError(RuntimeError):
    """One stream's generation went wrong (e.g. non-finite values); it alone fails, its batch goes on."""


class EngineUnavailableError(RuntimeError):
    """The engine cannot take the request now (out of memory, shutting down); retrying later may work."""


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_do_sample: bool = True
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: int | None = None

    @classmethod
    def from_generation_config(cls, config: Mapping[str, Any]) -> SamplingParams:
        """Defaults from a checkpoint's generation_config.json (the package's own names)."""
        names = {
            "do_sample": "do_sample",
            "temperature": "temperature",
            "top_k": "top_k",
            "top_p": "top_p",
            "repetition_penalty": "repetition_penalty",
            "subtalker_dosample": "subtalker_do_sample",
            "subtalker_temperature": "subtalker_temperature",
            "subtalker_top_k": "subtalker_top_k",
            "subtalker_top_p": "subtalker_top_p",
            "max_new_tokens": "max_new_tokens",
        }
        values = {ours: config[theirs] for theirs, ours in names.items() if theirs in config}
        return cls(**values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> SamplingParams:
        """Apply a request's own values. ``do_sample`` switches both the talker and the code predictor:
        greedy means greedy all the way down."""
        values = {k: v for k, v in overrides.items() if v is not None}
        if "do_sample" in values:
            values["subtalker_do_sample"] = values["do_sample"]
        return replace(self, **values)

    def check(self) -> None:
        """Every value inside its documented range (``sampling_ranges``), or a message naming the range."""
        for name in (*SAMPLING_RANGES, *SUBTALKER_RANGES):
            message = check_sampling_value(name, getattr(self, name))
            if message is not None:
                raise InvalidRequestError(message)


@dataclass
class SynthesisRequest:
    """One stream to synthesize. Exactly the fields of the Triton I/O contract, already decoded."""

    capability: Capability
    text: str
    language: str = "auto"
    speaker: str | None = None
    instruct: str | None = None
    # voice_clone: either a reference clip, or a precomputed voice prompt
    ref_audio: np.ndarray | None = None
    ref_sample_rate: int | None = None
    ref_text: str | None = None
    x_vector_only: bool = False
    speaker_embedding: np.ndarray | None = None
    ref_codes: np.ndarray | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    # voice agents: the text may keep arriving after the stream started
    text_open: bool = False

    @property
    def uses_icl(self) -> bool:
        """In-context cloning: the reference transcript and codes condition the generation."""
        return self.capability is Capability.VOICE_CLONE and bool(self.ref_text) and not self.x_vector_only


@dataclass(frozen=True)
class ModelSpec:
    """What a loaded checkpoint accepts, read from its config."""

    capability: Capability
    speakers: tuple[str, ...]
    languages: tuple[str, ...]
    speaker_embedding_dim: int | None = None


@dataclass(frozen=True)
class RequestLimits:
    max_text_length: int = 2000
    min_ref_audio_seconds: float = 3.0
    max_ref_audio_seconds: float = 30.0
    max_ref_code_frames: int = 2048


def validate(request: SynthesisRequest, spec: ModelSpec, limits: RequestLimits) -> SynthesisRequest:
    """Check a request against the model and the limits; return it normalised (lower-case names)."""
    _check_text(request.text, limits, allow_empty=request.text_open)
    language = _check_choice("language", request.language or "auto", spec.languages)
    speaker = request.speaker
    if spec.capability is Capability.CUSTOM_VOICE:
        speaker = _check_choice("speaker", speaker or "", spec.speakers)
    if spec.capability is Capability.VOICE_DESIGN and is_blank(request.instruct or ""):
        raise InvalidRequestError("instruct (the voice description) is required for voice_design")
    _check_length("instruct", request.instruct, limits)
    # The transcript is tokenized into the prompt like the text: unbounded, one request's tokenizing held up
    # the batch it joined (2 M characters paused the other streams for 4 s).
    _check_length("ref_text", request.ref_text, limits)
    if spec.capability is Capability.VOICE_CLONE:
        _check_clone_inputs(request, spec, limits)
    return replace(request, language=language, speaker=speaker)


def _check_text(text: str, limits: RequestLimits, *, allow_empty: bool) -> None:
    if is_blank(text) and not allow_empty:
        raise InvalidRequestError("text is empty (white space and invisible characters alone are blank)")
    _check_length("text", text, limits)


def _check_length(name: str, value: str | None, limits: RequestLimits) -> None:
    """Every text the model reads (text, instruct, ref_text) has the one limit, ``max_text_length``."""
    limit = limits.max_text_length
    if value is not None and len(value) > limit:
        raise InvalidRequestError(f"{name} has {len(value)} characters; the limit is {limit}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    normalised = value.strip().lower()
    if normalised not in choices:
        raise InvalidRequestError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")
    return normalised


def _check_clone_inputs(request: SynthesisRequest, spec: ModelSpec, limits: RequestLimits) -> None:
    has_clip = request.ref_audio is not None
    has_prompt = request.speaker_embedding is not None
    if has_clip == has_prompt:
        raise InvalidRequestError(
            "voice_clone needs exactly one of ref_audio (+ ref_sample_rate) or speaker_embedding"
        )
    if has_clip:
        _check_clip(request, limits)
    else:
        _check_prompt(request, spec, limits)


def clip_too_long(seconds: float, max_seconds: float) -> str:
    """The error for a reference clip over ``max_seconds`` (the engine's, and a front's before forwarding)."""
    return f"ref_audio is {seconds:.1f} s; at most {max_seconds:g} s is accepted"


def _check_clip(request: SynthesisRequest, limits: RequestLimits) -> None:
    audio = request.ref_audio
    rate = request.ref_sample_rate
    if rate is None or not REF_SAMPLE_RATES.contains(rate):
        raise InvalidRequestError(REF_SAMPLE_RATES.error("ref_sample_rate", rate))
    if audio is None or audio.ndim != 1:
        raise InvalidRequestError("ref_audio must be a 1-D array of finite float samples")
    # The length before the samples: an over-long clip is refused without reading its (maybe 100 M) values.
    seconds = audio.shape[0] / rate
    if seconds < limits.min_ref_audio_seconds:
        raise InvalidRequestError(
            f"ref_audio is {seconds:.2f} s; at least {limits.min_ref_audio_seconds:g} s is needed"
        )
    if seconds > limits.max_ref_audio_seconds:
        raise InvalidRequestError(clip_too_long(seconds, limits.max_ref_audio_seconds))
    if not np.all(np.isfinite(audio)):
        raise InvalidRequestError("ref_audio must be a 1-D array of finite float samples")


def _check_prompt(request: SynthesisRequest, spec: ModelSpec, limits: RequestLimits) -> None:
    embedding = request.speaker_embedding
    assert embedding is not None
    if embedding.ndim != 1 or embedding.shape[0] != spec.speaker_embedding_dim:
        raise InvalidRequestError(
            f"speaker_embedding must have shape [{spec.speaker_embedding_dim}], got {list(embedding.shape)}"
        )
    if not np.all(np.isfinite(embedding)):
        raise InvalidRequestError("speaker_embedding has non-finite values")
    codes = request.ref_codes
    if codes is None or codes.size == 0:
        return
    if codes.ndim != 2 or codes.shape[1] != NUM_CODE_GROUPS:
        raise InvalidRequestError(f"ref_codes must have shape [frames, {NUM_CODE_GROUPS}]")
    if codes.min() < 0 or codes.max() >= CODEBOOK_SIZE:
        raise InvalidRequestError(f"ref_codes must lie in [0, {CODEBOOK_SIZE})")
    if codes.shape[0] > limits.max_ref_code_frames:
        raise InvalidRequestError(f"ref_codes has more than {limits.max_ref_code_frames} frames")
    if not request.ref_text and not request.x_vector_only:
        raise InvalidRequestError("ref_codes need ref_text (or set x_vector_only)")
