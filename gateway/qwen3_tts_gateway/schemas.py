"""Request and response bodies. Enum-like strings are case-insensitive and their errors list the choices."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from .catalog import LANGUAGES, SPEAKERS, parse_language, parse_speaker, parse_voice
from .encoding import OUTPUT_FORMATS, STREAMABLE_FORMATS

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _output_format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(
            f"unsupported response_format {value[:32]!r}; supported: {', '.join(OUTPUT_FORMATS)}"
        )
    return fmt


def _enum_schema(values: object, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "enum": list(values), "description": description})  # type: ignore[call-overload]


SpeakerName = Annotated[
    str, AfterValidator(parse_speaker), _enum_schema(SPEAKERS, "A built-in timbre (case-insensitive).")
]
LanguageCode = Annotated[
    str,
    AfterValidator(parse_language),
    _enum_schema(LANGUAGES, "A language (case-insensitive; ISO 639-1 codes such as 'en' also accepted)."),
]
VoiceName = Annotated[
    str,
    AfterValidator(parse_voice),
    WithJsonSchema(
        {"type": "string", "description": f"A timbre ({', '.join(SPEAKERS)}) or 'qwen3-clone-<id>'."}
    ),
]
OutputFormatName = Annotated[
    str, AfterValidator(_output_format), _enum_schema(OUTPUT_FORMATS, "Audio format.")
]
Text = Annotated[str, AfterValidator(_non_blank)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SamplingFields(BaseModel):
    """Optional sampling overrides (the model's defaults otherwise)."""

    model_config = ConfigDict(extra="forbid")

    do_sample: bool | None = Field(None, description="false = greedy decoding.")
    temperature: PositiveFloat | None = None
    top_k: int | None = Field(None, ge=0, le=INT32_MAX, description="0 disables top-k.")
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    repetition_penalty: PositiveFloat | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=INT32_MAX, description="Upper bound on codec frames.")
    seed: int | None = Field(None, ge=0, le=INT64_MAX, description="Makes sampling reproducible.")


class VoiceFields(SamplingFields):
    """Text plus a built-in timbre (``speaker``) or a library voice (``voice: qwen3-clone-<id>``)."""

    text: Text
    speaker: SpeakerName | None = None
    voice: VoiceName | None = Field(None, description="A timbre or 'qwen3-clone-<id>'; overrides speaker.")
    language: LanguageCode = "auto"
    instruct: str | None = Field(None, description="Style instruction (built-in timbres only).")

    @model_validator(mode="after")
    def _needs_voice(self) -> VoiceFields:
        if self.speaker is None and self.voice is None:
            raise ValueError(f"speaker or voice is required; speakers: {', '.join(SPEAKERS)}")
        return self

    @property
    def selected_voice(self) -> str:
        return self.voice or self.speaker or ""


class SynthesizeRequest(VoiceFields):
    response_format: OutputFormatName = "wav"


class StreamSynthesizeRequest(VoiceFields):
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


class WebSocketSynthesizeRequest(VoiceFields):
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
    str, AfterValidator(_stream_encoding), _enum_schema(STREAMABLE_FORMATS, "Streamed audio encoding.")
]
MAX_LOOKAHEAD_TOKENS = 64  # the session models' limit (docs/triton-io-contract.md)


class SessionStartMessage(SamplingFields):
    """``/ws/session``: opens a voice-agent session (see gateway/README.md, "Voice-agent sessions")."""

    type: Literal["start"]
    voice: VoiceName
    language: LanguageCode = "auto"
    instruct: str | None = Field(None, description="Style instruction (built-in timbres only).")
    text: str = Field("", description="Optional first fragment of the text.")
    format: StreamEncodingName = Field("pcm", description="pcm (s16le), wav, mp3 or opus (in Ogg).")
    stream_format: Literal["binary", "json"] = Field(
        "binary", description="binary: audio in binary frames; json: chunk messages with base64 audio."
    )
    lookahead_tokens: int | None = Field(
        None,
        ge=0,
        le=MAX_LOOKAHEAD_TOKENS,
        description="Text tokens kept ahead of the talker before it speaks: more context, later audio.",
    )


class SessionTextMessage(BaseModel):
    """A fragment of text (any size, also a single token); ``flush`` commits a partial last word now."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str
    flush: bool = False


class SessionControlMessage(BaseModel):
    """``flush`` (commit a partial last word), ``end`` (the text is complete; optional last fragment)
    or ``cancel`` (stop now)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["flush", "end", "cancel"]
    text: str = ""


class DesignRequest(SamplingFields):
    """Speech in a voice described in words (``instruct``)."""

    text: Text
    instruct: Text = Field(description="The voice description, e.g. 'a calm, low male voice'.")
    language: LanguageCode = "auto"
    response_format: OutputFormatName = "wav"


class CloneFields(SamplingFields):
    """The fields of a clone request besides the reference audio."""

    text: Text
    ref_text: str | None = Field(None, description="Transcript of the reference clip (in-context cloning).")
    x_vector_only: bool = Field(False, description="Clone from the speaker embedding only.")
    language: LanguageCode = "auto"
    response_format: OutputFormatName = "wav"


class CloneJsonRequest(CloneFields):
    ref_audio: str = Field(description="Base64 WAV, FLAC, MP3 or OGG (a data: URL prefix is allowed).")


class VoiceCreateFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=100)
    ref_text: str | None = Field(None, description="Transcript of the reference clip (in-context cloning).")
    x_vector_only: bool = False


class VoiceCreateJsonRequest(VoiceCreateFields):
    ref_audio: str = Field(description="Base64 WAV, FLAC, MP3 or OGG (a data: URL prefix is allowed).")


class SpeechRequest(SamplingFields):
    """OpenAI ``POST /v1/audio/speech`` (unknown fields are ignored, as the SDK may add some)."""

    model_config = ConfigDict(extra="ignore")

    model: str = "qwen3-tts"
    input: Text
    voice: VoiceName
    instructions: str | None = None
    response_format: OutputFormatName = "mp3"
    speed: float | None = Field(None, ge=0.25, le=4.0, description="Only 1.0 is supported.")
    stream_format: Literal["audio", "sse"] = "audio"
    language: LanguageCode = "auto"

    @model_validator(mode="after")
    def _check(self) -> SpeechRequest:
        if self.speed is not None and self.speed != 1.0:
            raise ValueError("speed is not supported; omit it or use 1.0")
        if self.stream_format == "sse" and self.response_format not in STREAMABLE_FORMATS:
            raise ValueError(f"stream_format 'sse' supports response_format {', '.join(STREAMABLE_FORMATS)}")
        return self


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


class ReadyResponse(BaseModel):
    ready: bool
    server: bool
    models: dict[str, bool]


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
