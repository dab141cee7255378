"""Request validation: enums (case-insensitive) with the valid choices listed, text limits, and
property tests over random invalid payloads. Routes run over the fake engine (validation logic only)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.catalog import LANGUAGES, SPEAKERS, parse_language, parse_speaker, parse_voice
from qwen3_tts_gateway.schemas import NON_BLANK_PATTERN

from qwen3_tts_serving.sampling_ranges import INT64_MAX, SAMPLING_RANGES

from .conftest import encode, make_settings
from .fakes import FakeEngine

SPEAKER_NAMES = list(SPEAKERS)
LANGUAGE_CODES = list(LANGUAGES)
ISO_CODES = {"zh", "en", "de", "it", "pt", "es", "ja", "ko", "fr", "ru"}
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(settings=make_settings(tmp_path_factory.mktemp("validation")), engine=FakeEngine())
    with TestClient(app) as client:
        yield client


def error_of(response) -> dict:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["status"] == 422 and error["message"] and error["errors"]
    return error


def test_parsers_are_case_insensitive() -> None:
    assert parse_speaker(" Uncle_Fu ") == "uncle_fu"
    assert parse_language("ENGLISH") == "english"
    assert parse_language("Ja") == "japanese"
    assert parse_voice("Qwen3-Clone-ABC") == "qwen3-clone-abc"
    with pytest.raises(ValueError, match="valid speakers: serena, vivian, uncle_fu"):
        parse_speaker("alloy")
    with pytest.raises(ValueError, match="valid languages: auto, chinese, english"):
        parse_language("klingon")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"speaker": "ryan"}, "body.text"),
        ({"text": "", "speaker": "ryan"}, "body.text"),
        ({"text": "   \n", "speaker": "ryan"}, "body.text"),
        ({"text": "hi"}, "body"),
        ({"text": "hi", "speaker": "ryan", "language": "xx"}, "body.language"),
        ({"text": "hi", "speaker": "ryan", "temperature": 0}, "body.temperature"),
        ({"text": "hi", "speaker": "ryan", "top_p": 1.5}, "body.top_p"),
        ({"text": "hi", "speaker": "ryan", "top_k": -1}, "body.top_k"),
        ({"text": "hi", "speaker": "ryan", "seed": -1}, "body.seed"),
        ({"text": "hi", "speaker": "ryan", "max_new_tokens": 0}, "body.max_new_tokens"),
        ({"text": "hi", "speaker": "ryan", "bogus": 1}, "body.bogus"),
        ({"text": "hi", "speaker": "ryan", "response_format": "aac"}, "body.response_format"),
    ],
)
def test_synthesize_rejects(http: TestClient, body: dict, loc: str) -> None:
    error = error_of(http.post("/synthesize", json=body))
    assert error["errors"][0]["loc"] == loc


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers(http: TestClient, raw: str) -> None:
    body = f'{{"text": "hi", "speaker": "ryan", "temperature": {raw}}}'
    response = http.post("/synthesize", content=body, headers={"content-type": "application/json"})
    assert error_of(response)["errors"][0]["loc"] == "body.temperature"


JSON_BODY_ROUTES = ["/synthesize", "/synthesize/stream", "/design", "/v1/audio/speech", "/clone", "/voices"]
UNREADABLE_JSON = {
    "syntax": (b'{"text": "hi",', "Expecting property name enclosed in double quotes at character 14"),
    "not utf-8": (b'{"text": "\xff"}', "not UTF-8 text"),  # was a bare 400 "error parsing the body"
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # was a 500 on /clone and /voices
    "long number": (b'{"seed": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
}


@pytest.mark.parametrize("path", JSON_BODY_ROUTES)
@pytest.mark.parametrize(("body", "reason"), list(UNREADABLE_JSON.values()), ids=list(UNREADABLE_JSON))
def test_a_body_that_is_not_json_is_one_422_on_every_route(
    http: TestClient, path: str, body: bytes, reason: str
) -> None:
    """Why the body is not JSON, the same on every route; the parser's character offset is no field."""
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    error = error_of(response)
    assert error["message"].startswith("body: not valid JSON: ") and reason in error["message"], error
    assert error["param"] is None and error["errors"][0]["loc"] == "body"


NOT_JSON_TYPES = ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"]
JSON_TYPES = [None, "application/json", "Application/JSON", "application/merge+json"]


@pytest.mark.parametrize("path", JSON_BODY_ROUTES)
@pytest.mark.parametrize("content_type", NOT_JSON_TYPES)
def test_a_body_of_another_content_type_is_415_naming_the_accepted_ones(
    http: TestClient, path: str, content_type: str
) -> None:
    """Was a 422 "Input should be a valid dictionary" (or, on /clone and /voices, read as JSON anyway)."""
    uploads = path in ("/clone", "/voices")
    if uploads and content_type == "multipart/form-data":
        return  # an upload's other encoding (test_malformed_multipart_is_400)
    body = json.dumps(SAMPLING_BODIES.get(path, {"ref_audio": SAMPLING_BODIES["/clone"]["ref_audio"]}))
    response = http.post(path, content=body, headers={"content-type": f"{content_type}; charset=utf-8"})
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    accepted = "application/json or multipart/form-data" if uploads else "application/json"
    assert error["message"] == f"Content-Type must be {accepted}, got {content_type!r}", error
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", JSON_BODY_ROUTES)
@pytest.mark.parametrize("content_type", JSON_TYPES)
def test_json_is_read_with_no_content_type_or_any_json_one(
    http: TestClient, path: str, content_type: str | None
) -> None:
    body = json.dumps(SAMPLING_BODIES.get(path, {"ref_audio": SAMPLING_BODIES["/clone"]["ref_audio"]}))
    headers = {"content-type": content_type} if content_type else {}
    response = http.post(path, content=body, headers=headers)
    assert response.status_code in (200, 201), response.text


def test_text_length_limit(http: TestClient) -> None:
    limit = http.app.state.settings.max_text_length
    assert http.post("/synthesize", json={"text": "a" * limit, "speaker": "ryan"}).status_code == 200
    error = error_of(http.post("/synthesize", json={"text": "a" * (limit + 1), "speaker": "ryan"}))
    assert error["errors"][0]["loc"] == "body.text" and str(limit) in error["message"]
    error = error_of(http.post("/v1/audio/speech", json={"input": "a" * (limit + 1), "voice": "ryan"}))
    assert error["errors"][0]["loc"] == "body.input"


def test_unsupported_format_lists_supported(http: TestClient) -> None:
    error = error_of(
        http.post("/synthesize", json={"text": "hi", "speaker": "ryan", "response_format": "aac"})
    )
    assert "supported: wav, flac, mp3, opus, pcm" in error["message"]


@pytest.mark.parametrize("value", [5, True, ["ryan"], {"name": "ryan"}])
@pytest.mark.parametrize(
    ("path", "field", "choices"),
    [
        ("/synthesize", "speaker", SPEAKER_NAMES),
        ("/synthesize", "voice", SPEAKER_NAMES),
        ("/synthesize", "language", LANGUAGE_CODES),
        ("/synthesize", "response_format", ["wav", "flac", "mp3", "opus", "pcm"]),
        ("/v1/audio/speech", "voice", SPEAKER_NAMES),
        ("/v1/audio/speech", "response_format", ["wav", "flac", "mp3", "opus", "pcm"]),
    ],
)
def test_a_choice_of_the_wrong_type_names_the_choices(
    http: TestClient, path: str, field: str, choices: list[str], value: object
) -> None:
    """Not "Input should be a valid string": the choices, as for an unknown string."""
    body = {"input": "hi", "voice": "ryan"} if path.startswith("/v1") else {"text": "hi", "speaker": "ryan"}
    error = error_of(http.post(path, json={**body, field: value}))
    assert error["param"] == field and all(choice in error["message"] for choice in choices), error


non_speakers = st.text(min_size=0, max_size=30).filter(
    lambda s: s.strip().lower() not in SPEAKERS and not s.strip().lower().startswith("qwen3-clone-")
)
non_languages = st.text(min_size=0, max_size=30).filter(
    lambda s: s.strip().lower() not in LANGUAGES and s.strip().lower() not in ISO_CODES
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


@PROPERTY_SETTINGS
@given(name=non_speakers)
def test_random_speakers_rejected_with_names(http: TestClient, name: str) -> None:
    error = error_of(http.post("/synthesize", json={"text": "hi", "speaker": name}))
    assert all(speaker in error["message"] for speaker in SPEAKER_NAMES)
    error = error_of(http.post("/v1/audio/speech", json={"input": "hi", "voice": name}))
    assert all(speaker in error["message"] for speaker in SPEAKER_NAMES)


@PROPERTY_SETTINGS
@given(language=non_languages)
def test_random_languages_rejected_with_codes(http: TestClient, language: str) -> None:
    error = error_of(http.post("/synthesize", json={"text": "hi", "speaker": "ryan", "language": language}))
    assert all(code in error["message"] for code in LANGUAGE_CODES)


@PROPERTY_SETTINGS
@given(
    path=st.sampled_from(["/synthesize", "/synthesize/stream", "/design", "/v1/audio/speech"]),
    payload=st.dictionaries(
        st.sampled_from(
            [
                "text",
                "input",
                "speaker",
                "voice",
                "language",
                "instruct",
                "temperature",
                "top_p",
                "seed",
                "response_format",
                "stream_format",
                "max_new_tokens",
                "extra",
            ]
        ),
        json_values,
        max_size=6,
    )
    | json_values,
)
def test_random_invalid_payloads(http: TestClient, path: str, payload: object) -> None:
    response = http.post(path, json=payload)
    if response.status_code == 200:  # a random payload may happen to be valid
        return
    error_of(response)


@PROPERTY_SETTINGS
@given(
    seconds=st.floats(min_value=0.01, max_value=2.99),
    rate=st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
    channels=st.integers(min_value=1, max_value=2),
    fmt=st.sampled_from(["wav", "flac", "ogg"]),
)
def test_random_short_reference_audio(
    http: TestClient, seconds: float, rate: int, channels: int, fmt: str
) -> None:
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, size=(max(int(seconds * rate), 1), channels))
    audio = encode(samples.astype(np.float32), rate, fmt)
    response = http.post("/clone", json={"text": "hi", "ref_audio": base64.b64encode(audio).decode()})
    assert response.status_code == 400, response.text
    assert "minimum is 3 s" in response.json()["error"]["message"]


def test_validation_happens_before_engine(tmp_path: Path) -> None:
    engine = FakeEngine()
    with TestClient(create_app(settings=make_settings(tmp_path), engine=engine)) as client:
        client.post("/synthesize", json={"text": "hi", "speaker": "nobody"})
        client.post("/clone", json={"text": "", "ref_audio": "AAAA"})
    assert engine.requests == [] and engine.prompt_calls == []


@pytest.mark.parametrize("as_form", [False, True], ids=["json", "multipart"])
def test_a_voice_label_too_long_names_its_limit_in_characters(http: TestClient, as_form: bool) -> None:
    audio = encode(np.zeros(24_000 * 4), 24_000)
    if as_form:
        files = {"ref_audio": ("ref.wav", audio, "audio/wav")}
        response = http.post("/voices", data={"name": "x" * 101}, files=files)
    else:
        body = {"name": "x" * 101, "ref_audio": base64.b64encode(audio).decode()}
        response = http.post("/voices", json=body)
    error = error_of(response)
    assert error["param"] == "name" and "at most 100 characters" in error["message"], error


# --- sampling ranges (one definition: qwen3_tts_serving.sampling_ranges) -------------------------------

OUT_OF_RANGE = [
    ("temperature", 1e39),  # overflows float32: inf on the device
    ("temperature", 0),
    ("temperature", 1e-300),  # "> 0", but 0 as the engine's float32
    ("temperature", 10.5),
    ("repetition_penalty", 1e30),
    ("repetition_penalty", 0.01),
    ("top_k", SAMPLING_RANGES["top_k"].high + 1),
    ("top_k", -1),
    ("top_k", 2.5),
    ("top_p", 1.5),
    ("top_p", 0),
    ("top_p", 1e-300),
    ("max_new_tokens", SAMPLING_RANGES["max_new_tokens"].high + 1),
    ("max_new_tokens", 0),
    ("seed", INT64_MAX + 1),
    ("seed", -1),
    ("temperature", "hot"),
    ("temperature", True),  # JSON booleans are no numbers (pydantic took true as 1)
    ("top_k", True),
    ("seed", False),
]
SAY = {"text": "Hello there.", "speaker": "ryan"}
# Every REST body that carries sampling values, as the smallest valid body of its route.
SAMPLING_BODIES = {
    "/synthesize": SAY,
    "/synthesize/stream": SAY,
    "/design": {"text": "Hello.", "instruct": "A calm voice."},
    "/clone": {
        "text": "Hello.",
        "ref_audio": base64.b64encode(encode(np.zeros(24_000 * 4), 24_000)).decode(),
    },
    "/v1/audio/speech": {"input": "Hello.", "voice": "ryan"},
}


def assert_names_range(error: dict, name: str) -> None:
    """The 422 says which field, what its range is, and what was sent."""
    spec = SAMPLING_RANGES[name]
    assert error["param"] == name and error["errors"][0]["loc"].endswith(name)
    assert f"{name} must be {spec.describe()}" in error["message"], error["message"]


@pytest.mark.parametrize("path", list(SAMPLING_BODIES))
@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_sampling_out_of_range_names_the_range(http: TestClient, path: str, name: str, value: object) -> None:
    error = error_of(http.post(path, json={**SAMPLING_BODIES[path], name: value}))
    assert_names_range(error, name)


def test_overflowing_sampling_values_rejected_before_the_engine(tmp_path: Path) -> None:
    """The issue's request: a temperature that overflows float32 never reaches a batch."""
    engine = FakeEngine()
    with TestClient(create_app(settings=make_settings(tmp_path), engine=engine)) as client:
        response = client.post("/synthesize/stream", json={**SAY, "temperature": 1e39})
        assert_names_range(error_of(response), "temperature")
        response = client.post("/synthesize", json={**SAY, "repetition_penalty": 1e39})
        assert_names_range(error_of(response), "repetition_penalty")
    assert engine.requests == []


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("temperature", "hot", "got 'hot'"),  # was "got \"'hot'\"": quoted twice
        ("top_k", [1, 2], "got [1, 2]"),
        ("seed", "9" * 40, "got '" + "9" * 32 + "...'"),
        ("speed", "fast", "got 'fast'"),
    ],
)
def test_a_rejected_value_is_quoted_once(http: TestClient, field: str, value: object, shown: str) -> None:
    body = {**SAMPLING_BODIES["/v1/audio/speech"], field: value}
    error = error_of(http.post("/v1/audio/speech", json=body))
    assert error["message"].endswith(shown), error["message"]


@pytest.mark.parametrize(("name", "spec"), list(SAMPLING_RANGES.items()))
def test_range_edges_accepted(http: TestClient, name: str, spec: object) -> None:
    high = http.post("/synthesize", json={**SAY, name: spec.high})  # type: ignore[attr-defined]
    assert high.status_code == 200, high.text
    low = http.post("/synthesize", json={**SAY, name: spec.low})  # type: ignore[attr-defined]
    assert low.status_code == 200, low.text


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_websocket_synthesize_names_the_range(http: TestClient, name: str, value: object) -> None:
    with http.websocket_connect("/ws/synthesize") as ws:
        ws.send_json({**SAY, name: value})
        error = ws.receive_json()
    assert error["type"] == "error" and error["status"] == 422
    assert_names_range(error, name)


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_session_start_names_the_range(http: TestClient, name: str, value: object) -> None:
    with http.websocket_connect("/ws/session") as ws:
        ws.send_json({"type": "start", "voice": "ryan", name: value})
        error = ws.receive_json()
    assert error["type"] == "error" and error["status"] == 422 and error["fatal"]
    assert_names_range(error, name)


def test_session_lookahead_names_its_range(http: TestClient) -> None:
    with http.websocket_connect("/ws/session") as ws:
        ws.send_json({"type": "start", "voice": "ryan", "lookahead_tokens": 65})
        error = ws.receive_json()
    assert "lookahead_tokens must be an integer between 0 and 64, got 65" in error["message"]


def test_speed_only_one(http: TestClient) -> None:
    body = SAMPLING_BODIES["/v1/audio/speech"]
    error = error_of(http.post("/v1/audio/speech", json={**body, "speed": 1e39}))
    assert error["param"] == "speed" and "speed must be 1.0" in error["message"]
    error = error_of(http.post("/v1/audio/speech", json={**body, "speed": True}))
    assert error["param"] == "speed" and "speed must be 1.0" in error["message"]
    assert http.post("/v1/audio/speech", json={**body, "speed": 1}).status_code == 200


# --- blank text: nothing but white space and invisible characters (text_rules.is_blank) ---------------

# Zero-width space, ZWNJ, ZWJ, word joiner, BOM, soft hyphen, an RTL mark, a tag character, NUL.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200f\U000e0041\x00"
BLANK_TEXTS = {
    "zero-width space": "\u200b",
    "invisible and white space": f" {INVISIBLE}\n\u3000",
    "BOM": "\ufeff",
}
# Invisible characters among visible ones shape them: kept.
TEXTS_WITH_INVISIBLES = {
    "emoji ZWJ sequence": "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "RTL mark in Hebrew": "\u200f\u05e9\u05dc\u05d5\u05dd",
    "Arabic letter mark": "\u061c\u0645\u0631\u062d\u0628\u0627",
    "soft hyphen in a word": "hyphen\u00adation",
    "zero-width space around a word": "\u200bhi\u200b",
}
# Every text field that must not be blank: (route, body with the blank value in place of "{}", field).
NON_BLANK_FIELDS = [
    ("/synthesize", {**SAY, "text": "{}"}, "text"),
    ("/synthesize/stream", {**SAY, "text": "{}"}, "text"),
    ("/design", {**SAMPLING_BODIES["/design"], "text": "{}"}, "text"),
    ("/design", {**SAMPLING_BODIES["/design"], "instruct": "{}"}, "instruct"),
    ("/v1/audio/speech", {**SAMPLING_BODIES["/v1/audio/speech"], "input": "{}"}, "input"),
    ("/clone", {**SAMPLING_BODIES["/clone"], "text": "{}"}, "text"),
]


def _with(body: dict, value: str) -> dict:
    return {key: value if item == "{}" else item for key, item in body.items()}


@pytest.mark.parametrize("text", list(BLANK_TEXTS.values()), ids=list(BLANK_TEXTS))
@pytest.mark.parametrize(
    ("path", "body", "field"), NON_BLANK_FIELDS, ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_text_of_only_invisible_characters_is_blank(
    http: TestClient, path: str, body: dict, field: str, text: str
) -> None:
    """Was a 200: the zero-width space passed the "not blank" check (str.strip keeps it) and was spoken."""
    error = error_of(http.post(path, json=_with(body, text)))
    assert error["param"] == field and error["errors"][0]["loc"] == f"body.{field}", error
    blank_message = f"body.{field}: must not be empty: it has only white space and invisible characters ("
    assert error["message"].startswith(blank_message), error
    assert "U+200B" in error["message"] or "U+FEFF" in error["message"], error


def test_a_blank_text_is_refused_in_a_multipart_upload_and_on_the_websocket(http: TestClient) -> None:
    files = {"ref_audio": ("ref.wav", encode(np.zeros(24_000 * 4), 24_000), "audio/wav")}
    error = error_of(http.post("/clone", data={"text": "\u200b\u2060"}, files=files))
    blank_message = "body.text: must not be empty: it has only white space and invisible characters"
    assert error["message"] == f"{blank_message} (U+200B, U+2060)", error
    with http.websocket_connect("/ws/synthesize") as ws:
        ws.send_json({**SAY, "text": INVISIBLE})
        error = ws.receive_json()
    assert error["type"] == "error" and error["status"] == 422, error
    assert f"{blank_message.removeprefix('body.')} (U+0000, U+00AD, U+200B, ...)" in error["message"], error
    with http.websocket_connect("/ws/session") as ws:  # a session's first fragment may be empty: not checked
        ws.send_json({"type": "start", "voice": "ryan", "text": "\u200b"})
        assert ws.receive_json()["type"] == "started"


def test_white_space_alone_keeps_its_message(http: TestClient) -> None:
    error = error_of(http.post("/synthesize", json={**SAY, "text": " \t\n"}))
    assert error["message"] == "body.text: must not be empty", error


@pytest.mark.parametrize("text", list(TEXTS_WITH_INVISIBLES.values()), ids=list(TEXTS_WITH_INVISIBLES))
@pytest.mark.parametrize(
    ("path", "body", "field"), NON_BLANK_FIELDS, ids=lambda v: v if isinstance(v, str) else ""
)
def test_invisible_characters_among_visible_ones_are_kept(
    http: TestClient, path: str, body: dict, field: str, text: str
) -> None:
    response = http.post(path, json=_with(body, text))
    assert response.status_code == 200, response.text


def test_the_schema_pattern_of_a_text_refuses_a_blank_one(http: TestClient) -> None:
    pattern = _property(http.app.openapi()["components"]["schemas"]["SynthesizeRequest"], "text")["pattern"]
    for text in [*BLANK_TEXTS.values(), "", " \n"]:
        assert re.fullmatch(pattern, text.replace("\U000e0041", "")) is None, ascii(text)
    for text in [*TEXTS_WITH_INVISIBLES.values(), "hi", " \u200b.\n"]:
        assert re.fullmatch(pattern, text), ascii(text)


# --- input no route may turn into a 5xx -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/synthesize", {"text": "a\ud800b", "speaker": "ryan"}, "body.text"),
        ("/synthesize/stream", {"text": "hi", "speaker": "ryan", "instruct": "\udfff"}, "body.instruct"),
        ("/design", {"text": "hi", "instruct": "\ud800"}, "body.instruct"),
        ("/v1/audio/speech", {"input": "\ud800", "voice": "ryan"}, "body.input"),
        ("/synthesize", {"text": "hi", "voice": "qwen3-clone-\ud800"}, "body.voice"),
        ("/clone", {**SAMPLING_BODIES["/clone"], "ref_text": "\ud800"}, "body.ref_text"),
    ],
)
def test_lone_surrogates_rejected(http: TestClient, path: str, body: dict, loc: str) -> None:
    """JSON may escape a lone surrogate; such text cannot be encoded for the model server."""
    raw = json.dumps(body)  # ASCII: the surrogate as an escape, as any JSON encoder may write it
    error = error_of(http.post(path, content=raw, headers={"content-type": "application/json"}))
    assert error["errors"][0]["loc"] == loc and "lone surrogate" in error["message"]


def test_session_text_with_lone_surrogate_rejected(tmp_path: Path) -> None:
    with (
        TestClient(create_app(settings=make_settings(tmp_path), engine=FakeEngine())) as client,
        client.websocket_connect("/ws/session") as ws,
    ):
        ws.send_text(json.dumps({"type": "start", "voice": "ryan", "text": "\ud800"}))
        error = ws.receive_json()
    assert error["status"] == 422 and "lone surrogate" in error["message"]


MALFORMED_MULTIPART = {
    # The body: a header line ended by CR CR LF.
    "bare CR in a header": b'--b\r\nContent-Disposition: form-data; name="text"\r\r\n\r\nhi\r\n--b--\r\n',
    "no boundary line": b"\x00\x01 not multipart at all",
    "wrong boundary": b'--other\r\nContent-Disposition: form-data; name="text"\r\n\r\nhi\r\n--other--\r\n',
}


@pytest.mark.parametrize("path", ["/voices", "/clone"])
@pytest.mark.parametrize("body", list(MALFORMED_MULTIPART.values()), ids=list(MALFORMED_MULTIPART))
def test_malformed_multipart_is_400(http: TestClient, path: str, body: bytes) -> None:
    response = http.post(path, content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "multipart" in error["message"]
    response = http.post(path, content=b"x", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 400 and "boundary" in response.json()["error"]["message"]


# --- multipart: each field once, one file (ref_audio) ------------------------------------------------------

WAV_FILE = ("ref.wav", encode(np.zeros(24_000 * 4), 24_000), "audio/wav")
# Each upload route's smallest valid text fields, and one of them to repeat.
FORM_FIELDS = {"/clone": ({"text": "Hello."}, "text"), "/voices": ({"name": "mine"}, "name")}


@pytest.mark.parametrize("path", list(FORM_FIELDS))
def test_a_form_field_given_twice_is_refused(http: TestClient, path: str) -> None:
    """Was a 200 with the last value kept: the first was lost without a word."""
    fields, repeated = FORM_FIELDS[path]
    data = {**fields, repeated: ["first", "second"], "x_vector_only": ["true", "false", "true"]}
    error = error_of(http.post(path, data=data, files={"ref_audio": WAV_FILE}))
    assert error["param"] == repeated, error
    assert [(e["loc"], e["message"]) for e in error["errors"]] == [
        (f"body.{repeated}", f"{repeated} given 2 times; give it once"),
        ("body.x_vector_only", "x_vector_only given 3 times; give it once"),
    ]
    assert http.post(path, data=fields, files={"ref_audio": WAV_FILE}).status_code in (200, 201)


@pytest.mark.parametrize("path", list(FORM_FIELDS))
def test_one_file_is_ref_audio_and_no_other(http: TestClient, path: str) -> None:
    """Two ref_audio files were a 400 "Too many files. Maximum number of files is 1." naming no field."""
    fields, field = FORM_FIELDS[path]
    cases = {
        "ref_audio given 2 times; give it once": (fields, [("ref_audio", WAV_FILE), ("ref_audio", WAV_FILE)]),
        "ref_audio given 3 times; give it once": (
            {**fields, "ref_audio": "x"},
            [("ref_audio", WAV_FILE)] * 2,
        ),
        "extra is a file; only ref_audio is one": (fields, [("ref_audio", WAV_FILE), ("extra", WAV_FILE)]),
        f"{field} is a file; only ref_audio is one": (
            {},
            [(field, ("t.txt", b"Hi.")), ("ref_audio", WAV_FILE)],
        ),
    }
    for message, (data, files) in cases.items():
        error = error_of(http.post(path, data=data, files=files))
        assert error["message"] == f"body.{message.split()[0]}: {message}", error
        assert error["param"] == message.split()[0] and len(error["errors"]) == 1, error


# --- the OpenAPI schema states the real constraints -----------------------------------------------------


def _property(schema: dict, name: str) -> dict:
    """A property's schema, the ``null`` branch of an optional one left out."""
    prop = schema["properties"][name]
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    return branches[0]


def test_openapi_shows_the_ranges_enums_and_lengths(tmp_path: Path) -> None:
    app = create_app(settings=make_settings(tmp_path, max_text_length=123), engine=FakeEngine())
    document = app.openapi()
    components = document["components"]["schemas"]
    clone = document["paths"]["/clone"]["post"]["requestBody"]["content"]
    bodies = [
        components[name]
        for name in ("SynthesizeRequest", "StreamSynthesizeRequest", "DesignRequest", "SpeechRequest")
    ] + [clone["application/json"]["schema"], clone["multipart/form-data"]["schema"]]
    for body in bodies:
        for name, spec in SAMPLING_RANGES.items():
            prop = _property(body, name)
            assert prop["maximum"] == spec.high and isinstance(prop["maximum"], type(spec.high))
            assert prop["minimum"] == spec.low and prop["type"] == ("integer" if spec.integer else "number")
    synthesize = components["SynthesizeRequest"]
    assert _property(synthesize, "speaker")["enum"] == SPEAKER_NAMES
    assert set(LANGUAGE_CODES) | ISO_CODES == set(_property(synthesize, "language")["enum"])
    assert _property(synthesize, "response_format")["enum"] == ["wav", "flac", "mp3", "opus", "pcm"]
    assert _property(synthesize, "text") | {"title": ""} == {
        "type": "string",
        "minLength": 1,
        "maxLength": 123,
        "pattern": NON_BLANK_PATTERN,
        "title": "",
    }
    assert _property(synthesize, "instruct")["maxLength"] == 123
    assert {
        "anyOf": [
            {"required": ["speaker"], "properties": {"speaker": {"type": "string"}}},
            {"required": ["voice"], "properties": {"voice": {"type": "string"}}},
        ]
    } in synthesize["allOf"]
    speech = components["SpeechRequest"]
    assert _property(speech, "speed") == {"type": "number", "minimum": 1, "maximum": 1}
    assert _property(speech, "input")["maxLength"] == _property(speech, "instructions")["maxLength"] == 123
    assert _property(clone["application/json"]["schema"], "ref_text")["maxLength"] == 123
    voice = document["paths"]["/voices"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert _property(voice, "name")["maxLength"] == 100
    assert _property(voice, "ref_audio")["pattern"].startswith("^(data:[^,]*,)?")
    form = clone["multipart/form-data"]["schema"]["properties"]
    assert form["temperature"]["type"] == "number" and "anyOf" not in form["ref_text"]  # a form has no null
    assert "x-max-text-length" not in json.dumps(document)
