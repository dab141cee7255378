"""Voice id routing: qwen3-<timbre> → premium, qwen3-clone-<id> → voice library, anything else refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qwen3_tts_client.routing import (
    CLONE_PREFIX,
    PREFIX,
    TIMBRES,
    UnknownVoiceError,
    VoiceRoute,
    clone_voice_id,
    premium_voice_id,
    route_voice,
)


@pytest.mark.parametrize("timbre", TIMBRES)
def test_every_timbre_routes_to_premium(timbre: str) -> None:
    assert route_voice(f"qwen3-{timbre}") == VoiceRoute("premium", timbre)


def test_examples() -> None:
    assert route_voice("qwen3-clone-0123456789abcdef") == VoiceRoute("clone", "0123456789abcdef")
    assert route_voice("Qwen3-Vivian") == VoiceRoute("premium", "Vivian")
    assert route_voice("QWEN3-CLONE-abc") == VoiceRoute("clone", "abc")


@pytest.mark.parametrize(
    "voice_id", ["", "vivian", "qwen3-", "qwen3-clone-", "qwen3-clone", "elevenlabs-rachel", "qwen2-vivian"]
)
def test_foreign_or_incomplete_ids_are_refused(voice_id: str) -> None:
    with pytest.raises(UnknownVoiceError):
        route_voice(voice_id)


def test_unknown_voice_error_is_a_value_error() -> None:
    assert issubclass(UnknownVoiceError, ValueError)


ids = st.text(min_size=1, max_size=40)


@settings(max_examples=200)
@given(ids)
def test_clone_ids_round_trip(library_id: str) -> None:
    route = route_voice(clone_voice_id(library_id))
    assert route == VoiceRoute("clone", library_id)
    assert route.voice_id == CLONE_PREFIX + library_id


@settings(max_examples=200)
@given(ids.filter(lambda t: t.lower() != "clone" and not t.lower().startswith("clone-")))
def test_timbres_round_trip(timbre: str) -> None:
    route = route_voice(premium_voice_id(timbre))
    assert route == VoiceRoute("premium", timbre)
    assert route.voice_id == PREFIX + timbre


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_any_string_routes_consistently_or_is_refused(voice_id: str) -> None:
    head = voice_id[: len(CLONE_PREFIX)].lower()
    try:
        route = route_voice(voice_id)
    except UnknownVoiceError:
        # Refused: outside the namespace, or the namespace with nothing usable after the prefix.
        assert not head.startswith(PREFIX) or voice_id.lower() in (PREFIX, CLONE_PREFIX, PREFIX + "clone")
        return
    assert route.kind == ("clone" if head == CLONE_PREFIX else "premium")
    # The part after the prefix is passed on exactly as written.
    assert voice_id.endswith(route.target) and len(route.target) > 0
    assert route.voice_id[len(PREFIX) :] == voice_id[len(PREFIX) :]


@settings(max_examples=200)
@given(st.text(max_size=20), st.text(max_size=20))
def test_ids_outside_the_namespace_are_refused(prefix: str, rest: str) -> None:
    voice_id = prefix + rest
    if voice_id[: len(PREFIX)].lower() == PREFIX:
        return  # the concatenation happened to enter the namespace
    with pytest.raises(UnknownVoiceError):
        route_voice(voice_id)
