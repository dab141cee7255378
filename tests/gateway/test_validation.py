"""Request validation: enums (case-insensitive) with the valid choices listed, text limits, and
property tests over random invalid payloads. Routes run over the fake engine (validation logic only)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.catalog import LANGUAGES, SPEAKERS, parse_language, parse_speaker, parse_voice

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
