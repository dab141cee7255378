"""The Triton I/O contract of the served models, once: model names, tensors, request and response arrays,
and what an error from the server means (docs/triton-io-contract.md explains it in prose).

The models (``triton_adapter``), the gateway's Triton backend and the direct Python client all import
this module, and a test checks it against every ``config.pbtxt.template``: adding an input is one change
here (plus the templates), and the gateway and the client classify a server error the same way.
numpy only: no torch, no tritonclient, no pb_utils.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

CODE_GROUPS = 16

CUSTOM_VOICE = "custom_voice"
VOICE_DESIGN = "voice_design"
VOICE_CLONE = "voice_clone"
VOICE_PROMPT = "voice_prompt"
CUSTOM_VOICE_SESSION = "custom_voice_session"
VOICE_CLONE_SESSION = "voice_clone_session"
SYNTHESIS_MODELS = (CUSTOM_VOICE, VOICE_DESIGN, VOICE_CLONE)
SESSION_MODELS = (CUSTOM_VOICE_SESSION, VOICE_CLONE_SESSION)
MODELS = (*SYNTHESIS_MODELS, VOICE_PROMPT, *SESSION_MODELS)

# The checkpoint each client-facing model runs on. Every model above is a thin front: it forwards to an
# engine model of its checkpoint (one per checkpoint per GPU, ``engine_model_name``), which owns the weights,
# the key/value slots and the one running batch that plain requests and sessions share.
CHECKPOINTS = ("custom_voice", "base", "voice_design")
MODEL_CHECKPOINTS = {
    CUSTOM_VOICE: "custom_voice",
    CUSTOM_VOICE_SESSION: "custom_voice",
    VOICE_CLONE: "base",
    VOICE_CLONE_SESSION: "base",
    VOICE_PROMPT: "base",
    VOICE_DESIGN: "voice_design",
}
# The capability (prompt format) each checkpoint's engine serves.
CHECKPOINT_CAPABILITIES = {"custom_voice": CUSTOM_VOICE, "base": VOICE_CLONE, "voice_design": VOICE_DESIGN}
ENGINE_TEMPLATE = "engine"  # model_repository/engine/: filled once per checkpoint per GPU


def engine_model_name(checkpoint: str, index: int) -> str:
    """The engine model of ``checkpoint`` on GPU ``index`` (the index-th engine on a CPU host)."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    return f"{checkpoint}_engine_{index}"


Shape = Literal["scalar", "vector", "codes"]  # per request: [1], [-1], [-1, 16]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Triton's name: BYTES, FP32, INT32, INT64, BOOL
    shape: Shape = "scalar"

    @property
    def dtype(self) -> Any:
        return _NUMPY_DTYPES[self.datatype]

    @property
    def config_type(self) -> str:
        """The ``data_type`` of a config.pbtxt."""
        return "TYPE_STRING" if self.datatype == "BYTES" else f"TYPE_{self.datatype}"

    @property
    def dims(self) -> list[int]:
        return {"scalar": [1], "vector": [-1], "codes": [-1, CODE_GROUPS]}[self.shape]

    def array(self, value: Any) -> np.ndarray:
        """``value`` as a batch of one, in this tensor's dtype and shape."""
        if self.datatype == "BYTES":
            text = value if isinstance(value, bytes) else str(value).encode("utf-8")
            return np.array([[text]], dtype=np.object_)
        if self.shape == "vector":
            return np.asarray(value, dtype=self.dtype).reshape(1, -1)
        if self.shape == "codes":
            return np.asarray(value, dtype=self.dtype).reshape(1, -1, CODE_GROUPS)
        # A number beyond float32 becomes inf (not a warning here): the server refuses it, naming the range.
        with np.errstate(over="ignore"):
            return np.array([[value]], dtype=self.dtype)


_NUMPY_DTYPES: dict[str, Any] = {
    "BYTES": np.object_,
    "FP32": np.float32,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


def _specs(*specs: TensorSpec) -> dict[str, TensorSpec]:
    return {spec.name: spec for spec in specs}


SAMPLING_INPUTS = _specs(
    TensorSpec("do_sample", "BOOL"),
    TensorSpec("temperature", "FP32"),
    TensorSpec("top_k", "INT32"),
    TensorSpec("top_p", "FP32"),
    TensorSpec("repetition_penalty", "FP32"),
    TensorSpec("max_new_tokens", "INT32"),
    TensorSpec("seed", "INT64"),
)
REFERENCE_INPUTS = _specs(
    TensorSpec("ref_audio", "FP32", "vector"),
    TensorSpec("ref_sample_rate", "INT32"),
    TensorSpec("ref_text", "BYTES"),
    TensorSpec("x_vector_only", "BOOL"),
)
PROMPT_INPUTS = _specs(
    TensorSpec("speaker_embedding", "FP32", "vector"), TensorSpec("ref_codes", "INT64", "codes")
)
SESSION_INPUTS = _specs(TensorSpec("flush", "BOOL"), TensorSpec("lookahead_tokens", "INT32"))
# Which session a request of a session model belongs to, and whether it opens or closes it. Plain inputs,
# not Triton's sequence batcher: a sequence left open (a client gone without END) held a stopping server
# for its whole exit timeout, and a stopping server refuses the END a model would send itself.
SESSION_CONTROL_INPUTS = _specs(
    TensorSpec("session_id", "UINT64"),  # the client's name for its session (random, unique per server)
    TensorSpec("session_start", "BOOL"),  # opens the session: the voice, sampling and first text
    TensorSpec("session_end", "BOOL"),  # the session's input is complete
)
# false: the whole audio in one response instead of a stream of chunks (plain synthesis models only).
STREAM_INPUT = TensorSpec("stream", "BOOL")
TEXT_INPUTS = _specs(
    TensorSpec("text", "BYTES"),
    TensorSpec("speaker", "BYTES"),
    TensorSpec("language", "BYTES"),
    TensorSpec("instruct", "BYTES"),
)
# Every input any model takes; which model takes which is in MODEL_INPUTS.
INPUTS = {
    **TEXT_INPUTS,
    **REFERENCE_INPUTS,
    **PROMPT_INPUTS,
    **SAMPLING_INPUTS,
    **SESSION_INPUTS,
    **SESSION_CONTROL_INPUTS,
    STREAM_INPUT.name: STREAM_INPUT,
}

_SYNTHESIS_COMMON = ("text", "language", *SAMPLING_INPUTS)
_CLONE = (*REFERENCE_INPUTS, *PROMPT_INPUTS)
MODEL_INPUTS: dict[str, tuple[str, ...]] = {
    CUSTOM_VOICE: (*_SYNTHESIS_COMMON, "speaker", "instruct", "stream"),
    VOICE_DESIGN: (*_SYNTHESIS_COMMON, "instruct", "stream"),
    VOICE_CLONE: (*_SYNTHESIS_COMMON, *_CLONE, "stream"),
    VOICE_PROMPT: ("ref_audio", "ref_sample_rate", "ref_text", "x_vector_only"),
    CUSTOM_VOICE_SESSION: (
        *SESSION_CONTROL_INPUTS,
        *_SYNTHESIS_COMMON,
        "speaker",
        "instruct",
        *SESSION_INPUTS,
    ),
    VOICE_CLONE_SESSION: (*SESSION_CONTROL_INPUTS, *_SYNTHESIS_COMMON, *_CLONE, *SESSION_INPUTS),
}

# Inputs a request must carry (the rest are optional); a session's text may come later.
REQUIRED_INPUTS: dict[str, tuple[str, ...]] = {
    CUSTOM_VOICE: ("text", "speaker"),
    VOICE_DESIGN: ("text", "instruct"),
    VOICE_CLONE: ("text",),
    VOICE_PROMPT: ("ref_audio", "ref_sample_rate"),
    CUSTOM_VOICE_SESSION: ("session_id",),
    VOICE_CLONE_SESSION: ("session_id",),
}

CHUNK_OUTPUTS = _specs(
    TensorSpec("audio", "FP32", "vector"),
    TensorSpec("sample_rate", "INT32"),
    TensorSpec("sequence", "INT32"),
    TensorSpec("is_last", "BOOL"),
    TensorSpec("finish_reason", "BYTES"),
)
PROMPT_OUTPUTS = PROMPT_INPUTS
MODEL_OUTPUTS: dict[str, dict[str, TensorSpec]] = {
    **{model: CHUNK_OUTPUTS for model in (*SYNTHESIS_MODELS, *SESSION_MODELS)},
    VOICE_PROMPT: PROMPT_OUTPUTS,
}


# --------------------------------------------------------------------------------------- engine models
class EngineRequestKind(str, enum.Enum):
    """What a front asks of an engine model (its ``request_kind`` input)."""

    SPEECH = "speech"  # a plain stream: an empty acknowledgement, then its chunks
    SESSION_START = "session_start"  # a session opens (``session_id``): acknowledgement, then all its audio
    SESSION_TEXT = "session_text"  # more text for session ``session_id``: one empty FINAL response
    VOICE_PROMPT = "voice_prompt"  # a reference clip: one response with the prompt tensors
    CANCEL = "cancel"  # the client of stream ``stream_key`` went away: stop it


# Inputs only the fronts send: which request this is and which stream or session it names.
ROUTING_INPUTS = _specs(
    TensorSpec("request_kind", "BYTES"),
    TensorSpec("stream_key", "BYTES"),  # a front's name for one stream, unique on the server
    SESSION_CONTROL_INPUTS["session_id"],
    SESSION_CONTROL_INPUTS["session_end"],
)
# What a front passes on from its client's request; the routing inputs it adds itself.
FORWARDED_INPUTS = {name: spec for name, spec in INPUTS.items() if name not in SESSION_CONTROL_INPUTS}
ENGINE_INPUTS = {**ROUTING_INPUTS, **FORWARDED_INPUTS}
# An engine's error travels as tensors on a FINAL response: Triton 2.51 drops an error response that follows
# other responses of a BLS stream (the caller would wait forever). The code is a pb_utils.TritonError name.
ERROR_OUTPUTS = _specs(TensorSpec("error", "BYTES"), TensorSpec("error_code", "BYTES"))
ENGINE_OUTPUTS = {**CHUNK_OUTPUTS, **PROMPT_OUTPUTS, **ERROR_OUTPUTS}


def model_parameters(args: Mapping[str, Any]) -> dict[str, str]:
    """A served model's ``parameters`` (what the launcher wrote into its config.pbtxt), from the ``args``
    Triton's Python backend passes to ``initialize``."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


# ------------------------------------------------------------------------------------------ requests
def request_arrays(fields: Mapping[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """``(name, datatype, array)`` for every field that is not None; a name outside the contract raises."""
    out = []
    for name, value in fields.items():
        if value is None:
            continue
        spec = INPUTS.get(name)
        if spec is None:
            raise ValueError(f"the Triton models have no input {name!r}; valid: {', '.join(INPUTS)}")
        out.append((name, spec.datatype, spec.array(value)))
    return out


# ----------------------------------------------------------------------------------------- responses
@dataclass(frozen=True)
class Chunk:
    """One streamed response of a synthesis model."""

    sequence: int
    audio: np.ndarray  # float32 mono
    sample_rate: int
    is_last: bool
    finish_reason: str  # "" except on the last chunk


class MissingOutputError(ValueError):
    """A response without a tensor the contract promises."""


def chunk_arrays(
    *, sequence: int, audio: np.ndarray, sample_rate: int, is_last: bool, finish_reason: str
) -> dict[str, np.ndarray]:
    """The output arrays of one chunk (what a model sends)."""
    values = {
        "audio": audio,
        "sample_rate": sample_rate,
        "sequence": sequence,
        "is_last": is_last,
        "finish_reason": finish_reason,
    }
    return {name: CHUNK_OUTPUTS[name].array(value) for name, value in values.items()}


def parse_chunk(output: Callable[[str], np.ndarray | None]) -> Chunk:
    """A chunk from a response, given ``output(name)`` (e.g. tritonclient's ``InferResult.as_numpy``)."""

    def first(name: str) -> Any:
        value = output(name)
        if value is None or value.size == 0:
            raise MissingOutputError(f"the model server's response lacks {name!r}")
        return value.reshape(-1)[0]

    audio = output("audio")
    if audio is None:
        raise MissingOutputError("the model server's response lacks 'audio'")
    reason = first("finish_reason")
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return Chunk(
        sequence=int(first("sequence")),
        audio=np.asarray(audio, dtype=np.float32).reshape(-1),
        sample_rate=int(first("sample_rate")),
        is_last=bool(first("is_last")),
        finish_reason=str(reason or ""),
    )


def is_final(result: Any) -> bool:
    """A decoupled stream's last response: Triton's ``triton_final_response`` flag (the request was sent
    with ``enable_empty_final_response``). ``result`` is tritonclient's ``InferResult``."""
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and parameters["triton_final_response"].bool_param


def has_outputs(result: Any) -> bool:
    """False for the empty FINAL response (and a session's text acknowledgement), which carry no tensors."""
    return len(result.get_response().outputs) > 0


# -------------------------------------------------------------------------------------------- errors
class ErrorKind(str, enum.Enum):
    """What an error from the server means for the caller."""

    CONNECT = "connect"  # the server could not be reached
    INVALID = "invalid"  # the request is wrong (INVALID_ARG): the message names the valid choices
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"  # no such model (not loaded)
    OUT_OF_MEMORY = "out_of_memory"  # retry later
    OVERLOADED = "overloaded"  # queue full or waited too long: retry later
    UNAVAILABLE = "unavailable"  # down, not ready, shutting down: retry later
    INTERNAL = "internal"  # the model failed on this request


# What a model answers, with UNAVAILABLE, to a request that a draining server will not finish.
SHUTTING_DOWN = "the model server is shutting down; retry"
# How a session's request is refused when its session is not open there (the engine's and the fronts' words):
# text that raced the session's end, on its way, is answered with it before or after the last chunk.
NO_OPEN_SESSION = "no open session"


def no_open_session(session_id: int) -> str:
    return f"{NO_OPEN_SESSION} {session_id}: it finished, timed out or never started"


RETRYABLE = frozenset(
    {ErrorKind.CONNECT, ErrorKind.OUT_OF_MEMORY, ErrorKind.OVERLOADED, ErrorKind.UNAVAILABLE}
)

_CONNECT_MARKERS = ("failed to connect", "connection refused", "connect failed", "dns resolution failed")
_TIMEOUT_MARKERS = ("deadline exceeded", "timed out", "timeout")
_NOT_FOUND_MARKERS = ("unknown model",)
_OOM_MARKERS = ("out of memory", "out of gpu memory")
_OVERLOAD_MARKERS = ("queue", "overload", "too many")
_UNAVAILABLE_MARKERS = ("unavailable", "not ready", "retry")
_INTERNAL_MARKERS = ("failed to process the request", "traceback", "\nat:", "stub process", "internal")
_UNAVAILABLE_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"})


def status_name(code: Any) -> str | None:
    """``StatusCode.INVALID_ARGUMENT`` / ``"StatusCode.INVALID_ARGUMENT"`` / ``"INVALID_ARGUMENT"`` -> the
    bare upper-case name; None for no code."""
    if code is None or code == "":
        return None
    name = getattr(code, "name", None) or str(code)
    return name.rsplit(".", 1)[-1].upper()


def classify_error(message: str, code: Any = None) -> ErrorKind:
    """The meaning of a server error from its status code when there is one, else from its message.

    Errors inside a decoupled stream carry no code: the models send INVALID_ARG with a message naming the
    valid choices, "... retry" for what may work later and "internal error ..." for their own failures,
    so a message that matches nothing is the request's fault."""
    name = status_name(code)
    lowered = message.lower()
    if any(marker in lowered for marker in _CONNECT_MARKERS):
        return ErrorKind.CONNECT
    if name == "INVALID_ARGUMENT":
        return ErrorKind.INVALID
    if name == "DEADLINE_EXCEEDED" or any(marker in lowered for marker in _TIMEOUT_MARKERS):
        return ErrorKind.TIMEOUT
    if name == "CANCELLED":
        return ErrorKind.CANCELLED
    if name == "NOT_FOUND" or any(marker in lowered for marker in _NOT_FOUND_MARKERS):
        return ErrorKind.NOT_FOUND
    if any(marker in lowered for marker in _OOM_MARKERS):
        return ErrorKind.OUT_OF_MEMORY
    if any(marker in lowered for marker in _OVERLOAD_MARKERS):
        return ErrorKind.OVERLOADED
    if name in _UNAVAILABLE_CODES or any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return ErrorKind.UNAVAILABLE
    if name is not None or any(marker in lowered for marker in _INTERNAL_MARKERS):
        return ErrorKind.INTERNAL
    return ErrorKind.INVALID
