"""Request and response bodies. Enum-like strings are case-insensitive and their errors list the choices.

The OpenAPI schema states what the API accepts: enums for speakers, languages and formats, every
sampling value's range (``SAMPLING_RANGES``, the one definition the engine checks too), non-blank texts,
the cross-field rules (speaker or voice; streamable formats) and text lengths (``TEXT_LIMIT_KEY``: the
app fills in ``settings.max_text_length``, see openapi.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from qwen3_tts_serving.sampling_ranges import SAMPLING_RANGES, Range
from qwen3_tts_serving.text_rules import is_blank, is_invisible

from .catalog import CLONE_VOICE_PREFIX, LANGUAGES, SPEAKERS, parse_language, parse_speaker, parse_voice
from .encoding import OUTPUT_FORMATS, STREAMABLE_FORMATS

# OpenAPI marker of the text fields limited by settings.max_text_length (a per-deployment value).
TEXT_LIMIT_KEY = "x-max-text-length"
_SHOWN_CHARS = 32  # of a rejected value quoted in an error message


@dataclass(frozen=True)
class _JsonSchemaHint:
    """Adds ``keys`` to a type's JSON schema without changing its validation (which has better messages)."""

    keys: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.keys)))

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(core_schema), **self.keys}


def _valid_unicode(value: str) -> str:
    """JSON can carry lone surrogates (``"\\ud800"``); no text is encoded for the model server with one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (it contains a lone surrogate)") from None
    return value


# Characters that show nothing: controls (Cc) and format characters (Cf: zero-width space, joiners, word
# joiner, BOM, soft hyphen, bidi marks...). Among visible ones they shape them (an emoji's ZWJ, an RTL mark);
# a text of only these and white space has nothing to speak.
_SHOWN_INVISIBLES = 3  # code points a blank text's error names


def _non_blank(value: str) -> str:
    if not is_blank(value):
        return value
    invisible = sorted({char for char in value if not char.isspace()})
    if not invisible:
        raise ValueError("must not be empty")
    named = ", ".join(f"U+{ord(char):04X}" for char in invisible[:_SHOWN_INVISIBLES])
    more = ", ..." if len(invisible) > _SHOWN_INVISIBLES else ""
    raise ValueError(f"must not be empty: it has only white space and invisible characters ({named}{more})")


def _invisible_class() -> str:
    """The invisible characters that are not white space, as ranges of a regex character class. Only the
    BMP: no escape of a character beyond it reads the same in ECMA-262 (JSON Schema) and Python regexes."""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        if is_invisible(chr(code)) and not chr(code).isspace():
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges)


def _output_format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(
            f"unsupported response_format {value[:32]!r}; supported: {', '.join(OUTPUT_FORMATS)}"
        )
    return fmt


def _named_choice(parse: Callable[[str], str]) -> BeforeValidator:
    """A non-string (``"speaker": 5``) gets the parser's error, which lists the choices, not pydantic's "Input
    should be a valid string"; the value is shown as JSON (``null``, ``5``), which no choice is, so ``parse``
    raises."""

    def check(value: object) -> object:
        return value if isinstance(value, str) else parse(json.dumps(value, default=str)[:_SHOWN_CHARS])

    return BeforeValidator(check)


def _enum_schema(values: object, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "enum": list(values), "description": description})  # type: ignore[call-overload]


def _shown(value: object) -> object:
    """A rejected value for an error message to quote (``!r``, once): numbers, booleans and short values as
    they are, a long string cut short, anything else long as its cut ``repr``."""
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
    text = repr(value)
    return value if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _checked(base: type, constraints: list[Any], message: Callable[[object], str]) -> Any:
    """``base`` with ``constraints`` (annotated_types: in the OpenAPI schema and checked by pydantic); any
    rejected value gets ``message(value)`` instead of pydantic's partial one ("less than or equal to 10")."""

    def check(value: object, handler: ValidatorFunctionWrapHandler) -> object:
        if isinstance(value, bool):  # JSON true is no number (pydantic took it as 1; Range.contains does not)
            raise ValueError(message(value))
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(message(value)) from None

    return Annotated[(base, *constraints, WrapValidator(check))]  # type: ignore[return-value]


def in_range(name: str, spec: Range) -> Any:
    """A number inside ``spec``; the 422 names the range (``Range.error``)."""
    return _checked(
        int if spec.integer else float,
        [annotated_types.Ge(spec.low), annotated_types.Le(spec.high)],
        lambda value: spec.error(name, _shown(value)),
    )


def range_description(text: str, spec: Range) -> str:
    meaning = f"; {spec.meaning}" if spec.meaning else ""
    return f"{text}: {spec.describe()}{meaning}."


_LANGUAGE_CHOICES = [*LANGUAGES, *(lang.iso_639_1 for lang in LANGUAGES.values() if lang.iso_639_1)]
# A stored voice's name: its id is 16 hex digits (catalog.VOICE_ID_PATTERN).
CLONE_VOICE_SCHEMA = {"type": "string", "pattern": f"^{CLONE_VOICE_PREFIX}[0-9a-f]{{16}}$"}
# /voices/{voice_id}: the bare id or the voice name.
VOICE_ID_SCHEMA = {"pattern": f"^({CLONE_VOICE_PREFIX})?[0-9a-f]{{16}}$"}

SpeakerName = Annotated[
    str,
    _named_choice(parse_speaker),
    AfterValidator(parse_speaker),
    _enum_schema(SPEAKERS, "A built-in timbre (case-insensitive)."),
]
LanguageCode = Annotated[
    str,
    _named_choice(parse_language),
    AfterValidator(parse_language),
    _enum_schema(
        _LANGUAGE_CHOICES, "A language (case-insensitive; ISO 639-1 codes such as 'en' also accepted)."
    ),
]
VoiceName = Annotated[
    str,
    _named_choice(parse_voice),
    AfterValidator(_valid_unicode),
    AfterValidator(parse_voice),
    WithJsonSchema(
        {
            "type": "string",
            "anyOf": [{"enum": list(SPEAKERS)}, CLONE_VOICE_SCHEMA],
            "description": f"A timbre ({', '.join(SPEAKERS)}) or '{CLONE_VOICE_PREFIX}<id>' from /voices.",
        }
    ),
]
OutputFormatName = Annotated[
    str,
    _named_choice(_output_format),
    AfterValidator(_output_format),
    _enum_schema(OUTPUT_FORMATS, "Audio format."),
]
# Limited by settings.max_text_length (checked by bodies.check_text_lengths, shown by openapi.py).
UnicodeText = Annotated[str, AfterValidator(_valid_unicode)]
LimitedText = Annotated[UnicodeText, _JsonSchemaHint({TEXT_LIMIT_KEY: True})]
# The length bound before the validator, so that pydantic checks and reports it as a string's ("at most 100
# characters"); after a validator it counts generic "items".
VoiceLabel = Annotated[str, StringConstraints(max_length=100), AfterValidator(_valid_unicode)]
# Text that must say something: at least one character that is neither white space nor invisible
# (``is_blank``). The pattern says so up to the invisible characters beyond the BMP; anchored, so that schema
# tools combine it with maxLength (schemathesis rewrites an unanchored one and drops the length).
_BLANK_CLASS = f"\\s{_invisible_class()}"
NON_BLANK_PATTERN = f"^[{_BLANK_CLASS}]*[^{_BLANK_CLASS}][\\s\\S]*$"
Text = Annotated[
    UnicodeText,
    AfterValidator(_non_blank),
    _JsonSchemaHint({TEXT_LIMIT_KEY: True, "minLength": 1, "pattern": NON_BLANK_PATTERN}),
]
# Base64 (standard alphabet, padded, not empty), optionally as a data: URL (refaudio.decode_base64 reads it).
_BASE64_TAIL = "[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}="
_BASE64_PATTERN = f"^(data:[^,]*,)?(([A-Za-z0-9+/]{{4}})+({_BASE64_TAIL})?|{_BASE64_TAIL})$"
Base64Audio = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _BASE64_PATTERN,
            "contentEncoding": "base64",
            "description": "Base64 WAV, FLAC, MP3 or OGG (a data: URL prefix is allowed).",
        }
    ),
]


def _add_schema_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """``json_schema_extra``: a model's cross-field rules (``SCHEMA_RULES``) join its JSON schema."""
    rules: tuple[dict[str, Any], ...] = getattr(model, "SCHEMA_RULES", ())
    if rules:
        schema["allOf"] = [dict(rule) for rule in rules]


def _present(name: str) -> dict[str, Any]:
    """The rule "``name`` is given (a string, not null)"."""
    return {"required": [name], "properties": {name: {"type": "string"}}}


def _one_of_values(name: str, values: object, *, required: bool = False) -> dict[str, Any]:
    """The rule "``name``, when given (or always, with ``required``), is one of ``values``"."""
    rule: dict[str, Any] = {"properties": {name: {"enum": list(values)}}}  # type: ignore[call-overload]
    return {**rule, "required": [name]} if required else rule


NEEDS_VOICE = {"anyOf": [_present("speaker"), _present("voice")]}


Temperature = in_range("temperature", SAMPLING_RANGES["temperature"])
TopK = in_range("top_k", SAMPLING_RANGES["top_k"])
TopP = in_range("top_p", SAMPLING_RANGES["top_p"])
RepetitionPenalty = in_range("repetition_penalty", SAMPLING_RANGES["repetition_penalty"])
MaxNewTokens = in_range("max_new_tokens", SAMPLING_RANGES["max_new_tokens"])
Seed = in_range("seed", SAMPLING_RANGES["seed"])


def _sampling_field(name: str, text: str) -> Any:
    return Field(None, description=range_description(text, SAMPLING_RANGES[name]))


class SamplingFields(BaseModel):
    """Optional sampling overrides (the model's defaults otherwise), each inside ``SAMPLING_RANGES``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_add_schema_rules)
    SCHEMA_RULES: ClassVar[tuple[dict[str, Any], ...]] = ()

    do_sample: bool | None = Field(None, description="false = greedy decoding.")
    temperature: Temperature | None = _sampling_field("temperature", "Sampling temperature")
    top_k: TopK | None = _sampling_field("top_k", "Sample among the k likeliest codes")
    top_p: TopP | None = _sampling_field("top_p", "Nucleus sampling mass")
    repetition_penalty: RepetitionPenalty | None = _sampling_field(
        "repetition_penalty", "Penalty on repeated codes"
    )
    max_new_tokens: MaxNewTokens | None = _sampling_field("max_new_tokens", "Upper bound on codec frames")
    seed: Seed | None = _sampling_field("seed", "Makes sampling reproducible")


@dataclass(frozen=True)
class SpeechInput:
    """What every speech entry point asks for, whatever its body calls the fields."""

    text: str
    voice: str  # a timbre or qwen3-clone-<id>
    language: str
    instruct: str | None
    limited: dict[str, str | None]  # the body's own field names -> values bounded by max_text_length


class SpeechBody(SamplingFields):
    """Base of every body that speaks text in a timbre or a library voice (REST, OpenAI, both WebSockets):
    ``SynthesisService.speech_request`` turns any of them into the engine request."""

    def speech(self) -> SpeechInput:
        raise NotImplementedError


class VoiceFields(SpeechBody):
    """Text plus a built-in timbre (``speaker``) or a library voice (``voice: qwen3-clone-<id>``)."""

    SCHEMA_RULES = (NEEDS_VOICE,)

    text: Text
    speaker: SpeakerName | None = None
    voice: VoiceName | None = Field(None, description="A timbre or 'qwen3-clone-<id>'; overrides speaker.")
    language: LanguageCode = "auto"
    instruct: LimitedText | None = Field(None, description="Style instruction (built-in timbres only).")

    @model_validator(mode="after")
    def _needs_voice(self) -> VoiceFields:
        if self.speaker is None and self.voice is None:
            raise ValueError(f"speaker or voice is required; speakers: {', '.join(SPEAKERS)}")
        return self

    @property
    def selected_voice(self) -> str:
        return self.voice or self.speaker or ""

    def speech(self) -> SpeechInput:
        limited = {"text": self.text, "instruct": self.instruct}
        return SpeechInput(self.text, self.selected_voice, self.language, self.instruct, limited)


class SynthesizeRequest(VoiceFields):
    response_format: OutputFormatName = "wav"


class StreamSynthesizeRequest(VoiceFields):
    SCHEMA_RULES = (
        NEEDS_VOICE,
        {
            "anyOf": [
                _one_of_values("stream_format", ["ndjson"]),
                _one_of_values("response_format", STREAMABLE_FORMATS),
            ]
        },
    )

    stream_format: Literal["ndjson", "audio"] = Field(
        "ndjson", description="ndjson: one JSON line per chunk; audio: raw bytes of response_format."
    )
    response_format: OutputFormatName = Field(
        "pcm", description="With stream_format=audio: pcm, wav (streaming header), mp3 or opus (in Ogg)."
    )

    @model_validator(mode="after")
    def _streamable(self) -> StreamSynthesizeRequest:
        if self.stream_format == "audio" and self.response_format not in STREAMABLE_FORMATS:
            raise ValueError(
                f"response_format {self.response_format!r} cannot be streamed; "
                f"streamable: {', '.join(STREAMABLE_FORMATS)}"
            )
        return self


# A client's own id of a WebSocket message, echoed on the events that answer it (gateway/README.md, "Message
# ids"); a token, never a path, URL or format string.
MESSAGE_ID_MAX_CHARS = 64
MESSAGE_ID_PATTERN = f"^[A-Za-z0-9._:-]{{1,{MESSAGE_ID_MAX_CHARS}}}$"
MessageId = _checked(
    str,
    [StringConstraints(min_length=1, max_length=MESSAGE_ID_MAX_CHARS, pattern=MESSAGE_ID_PATTERN)],
    lambda value: (
        f"id must be 1 to {MESSAGE_ID_MAX_CHARS} characters, each a letter, digit, '.', '_', ':' or '-', "
        f"got {_shown(value)!r}"
    ),
)


class ClientMessage(BaseModel):
    """What every client message of both WebSockets may carry: ``id``, echoed on the events that answer it."""

    id: MessageId | None = Field(
        None,
        description=(
            f"Your id of this message (1 to {MESSAGE_ID_MAX_CHARS} of A-Z a-z 0-9 . _ : -), echoed as 'id' "
            "on every event that answers it."
        ),
    )


class WebSocketSynthesizeRequest(VoiceFields, ClientMessage):
    type: Literal["synthesize"] = "synthesize"
    stream_format: Literal["binary", "json"] = Field(
        "binary", description="binary: PCM s16le frames; json: chunk messages with base64 PCM."
    )


def _stream_encoding(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in STREAMABLE_FORMATS:
        raise ValueError(f"unsupported format {value[:32]!r}; streamable: {', '.join(STREAMABLE_FORMATS)}")
    return fmt


StreamEncodingName = Annotated[
    str,
    _named_choice(_stream_encoding),
    AfterValidator(_stream_encoding),
    _enum_schema(STREAMABLE_FORMATS, "Streamed audio encoding."),
]
MAX_LOOKAHEAD_TOKENS = 64  # the session models' limit (docs/triton-io-contract.md)
LOOKAHEAD_RANGE = Range(0, MAX_LOOKAHEAD_TOKENS, integer=True)
LookaheadTokens = in_range("lookahead_tokens", LOOKAHEAD_RANGE)


class SessionStartMessage(SpeechBody, ClientMessage):
    """``/ws/session``: opens a voice-agent session (see gateway/README.md, "Voice-agent sessions")."""

    type: Literal["start"]
    voice: VoiceName
    language: LanguageCode = "auto"
    instruct: LimitedText | None = Field(None, description="Style instruction (built-in timbres only).")
    text: LimitedText = Field("", description="Optional first fragment of the text.")
    format: StreamEncodingName = Field("pcm", description="pcm (s16le), wav, mp3 or opus (in Ogg).")
    stream_format: Literal["binary", "json"] = Field(
        "binary", description="binary: audio in binary frames; json: chunk messages with base64 audio."
    )
    lookahead_tokens: LookaheadTokens | None = Field(
        None,
        description=range_description(
            "Text tokens kept ahead of the talker before it speaks (more context, later audio)",
            LOOKAHEAD_RANGE,
        ),
    )

    def speech(self) -> SpeechInput:
        limited = {"text": self.text, "instruct": self.instruct}
        return SpeechInput(self.text, self.voice, self.language, self.instruct, limited)


class SessionTextMessage(ClientMessage):
    """A fragment of text (any size, also a single token); ``flush`` commits a partial last word now."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: UnicodeText
    flush: bool = False


class SessionControlMessage(ClientMessage):
    """``flush`` (commit a partial last word), ``end`` (the text is complete; optional last fragment)
    or ``cancel`` (stop now)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["flush", "end", "cancel"]
    text: UnicodeText = ""


class DesignRequest(SamplingFields):
    """Speech in a voice described in words (``instruct``)."""

    text: Text
    instruct: Text = Field(description="The voice description, e.g. 'a calm, low male voice'.")
    language: LanguageCode = "auto"
    response_format: OutputFormatName = "wav"


class CloneFields(SamplingFields):
    """The fields of a clone request besides the reference audio."""

    text: Text
    ref_text: LimitedText | None = Field(
        None, description="Transcript of the reference clip (in-context cloning)."
    )
    x_vector_only: bool = Field(False, description="Clone from the speaker embedding only.")
    language: LanguageCode = "auto"
    response_format: OutputFormatName = "wav"


class CloneJsonRequest(CloneFields):
    ref_audio: Base64Audio


class VoiceCreateFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: VoiceLabel | None = Field(None, description="A label of your own.")
    ref_text: LimitedText | None = Field(
        None, description="Transcript of the reference clip (in-context cloning)."
    )
    x_vector_only: bool = False


class VoiceCreateJsonRequest(VoiceCreateFields):
    ref_audio: Base64Audio


# OpenAI's speed; only the natural one is supported.
Speed = _checked(
    float,
    [annotated_types.Ge(1.0), annotated_types.Le(1.0)],
    lambda value: f"speed must be 1.0 (other speeds are not supported), got {_shown(value)!r}",
)


class SpeechRequest(SpeechBody):
    """OpenAI ``POST /v1/audio/speech`` (unknown fields are ignored, as the SDK may add some)."""

    model_config = ConfigDict(extra="ignore")
    SCHEMA_RULES = (
        {
            "anyOf": [
                _one_of_values("stream_format", ["audio"]),
                _one_of_values("response_format", STREAMABLE_FORMATS, required=True),
            ]
        },
    )

    model: str = Field(
        "qwen3-tts",
        description="Any name is accepted, so code written for OpenAI's tts-1 runs unchanged; the voice "
        "decides which checkpoint speaks.",
    )
    input: Text
    voice: VoiceName
    instructions: LimitedText | None = None
    response_format: OutputFormatName = "mp3"
    speed: Speed | None = Field(None, description="Only 1.0 is supported (OpenAI's range is 0.25 to 4).")
    stream_format: Literal["audio", "sse"] = "audio"
    language: LanguageCode = "auto"

    @model_validator(mode="after")
    def _check(self) -> SpeechRequest:
        if self.stream_format == "sse" and self.response_format not in STREAMABLE_FORMATS:
            raise ValueError(f"stream_format 'sse' supports response_format {', '.join(STREAMABLE_FORMATS)}")
        return self

    def speech(self) -> SpeechInput:
        limited = {"input": self.input, "instructions": self.instructions}
        return SpeechInput(self.input, self.voice, self.language, self.instructions, limited)


# --- responses --------------------------------------------------------------------------------------


class SpeakerInfo(BaseModel):
    name: str
    description: str
    native_language: str
    dialect: str | None = None


class SpeakersResponse(BaseModel):
    speakers: list[SpeakerInfo]


class LanguageInfo(BaseModel):
    code: str
    name: str
    iso_639_1: str | None = None


class LanguagesResponse(BaseModel):
    languages: list[LanguageInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class BackendState(BaseModel):
    """One Triton backend as the gateway sees it (refreshed every gateway_backend_refresh_s)."""

    address: str = Field(description="gRPC host:port.")
    ready: bool = Field(description="Its readiness at the last poll.")
    in_rotation: bool = Field(description="Ready and its circuit closed: new streams may go there.")
    circuit_open: bool = Field(description="It failed (unreachable, shutting down, died mid-stream).")
    engine_streams: float | None = Field(
        description="Active + queued streams in its engines (all gateways), when its metrics answer."
    )
    open_streams: int = Field(description="This gateway's streams, sessions and prompt calls on it.")
    models: dict[str, bool] = Field(description="Each model it holds and whether it is ready.")


class ReadyResponse(BaseModel):
    ready: bool
    server: bool = Field(description="At least one Triton backend is ready.")
    models: dict[str, bool]
    backends: list[BackendState] | None = Field(
        None, description="Each Triton backend (absent for an injected engine)."
    )
    draining: bool | None = Field(None, description="True while the gateway drains before it exits.")


class StreamChunkMessage(BaseModel):
    """One NDJSON line of /synthesize/stream (and a WebSocket JSON message of /ws/synthesize)."""

    type: Literal["chunk"] = "chunk"
    sequence: int
    audio: str = Field(description="Base64 of raw PCM, 16-bit little-endian, mono.")
    sample_rate: int
    is_last: bool
    finish_reason: str = Field(description="'' except on the last chunk: stop, length or repetition.")


class StreamDoneMessage(BaseModel):
    """The last NDJSON line of /synthesize/stream (after the last chunk), like an HTTP trailer."""

    type: Literal["done"] = "done"
    finish_reason: str = Field(description="stop, length or repetition (the first guard rail that fired).")
    sample_rate: int
    duration: float = Field(description="Seconds of audio streamed.")
    chunks: int


class VoiceInfo(BaseModel):
    id: str
    voice: str = Field(description="Use as 'voice' in synthesis requests.")
    name: str | None
    ref_text: str | None
    x_vector_only: bool
    duration_s: float
    created_at: float


class VoiceList(BaseModel):
    voices: list[VoiceInfo]
