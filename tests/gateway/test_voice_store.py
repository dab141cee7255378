"""The SQLite voice library: persistence across restarts, per-key visibility, and its routes."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from qwen3_tts_gateway.engine import VoicePrompt
from qwen3_tts_gateway.voices import VoiceStore, owner_of

from .conftest import clip, make_settings
from .fakes import FakeEngine


def prompt(frames: int = 4) -> VoicePrompt:
    codes = np.arange(frames * 16, dtype=np.int64).reshape(frames, 16)
    return VoicePrompt(np.linspace(0, 1, 8, dtype=np.float32), codes, "the transcript", frames == 0)


async def test_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "voices.db"
    record = await VoiceStore(path).add(owner_of("a"), prompt(), name="Alice", duration_s=4.2)
    assert len(record.id) == 16 and record.voice == f"qwen3-clone-{record.id}"
    reopened = VoiceStore(path)
    assert await reopened.get(owner_of("a"), record.id) == record
    stored = await reopened.get_prompt(owner_of("a"), record.id)
    assert stored is not None and stored.ref_text == "the transcript" and not stored.x_vector_only
    np.testing.assert_array_equal(stored.ref_codes, prompt().ref_codes)
    np.testing.assert_array_equal(stored.speaker_embedding, prompt().speaker_embedding)


async def test_visible_only_to_owner(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path / "voices.db")
    mine = await store.add(owner_of("a"), prompt(), name=None, duration_s=3.5)
    await store.add(owner_of("b"), prompt(0), name=None, duration_s=3.5)
    assert [r.id for r in await store.list_owned(owner_of("a"))] == [mine.id]
    assert await store.get(owner_of("b"), mine.id) is None
    assert await store.get_prompt(owner_of("b"), mine.id) is None
    assert not await store.delete(owner_of("b"), mine.id)
    assert await store.delete(owner_of("a"), mine.id)
    assert await store.get(owner_of("a"), mine.id) is None


async def test_keys_are_not_stored(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path / "voices.db")
    await store.add(owner_of("secret-key"), prompt(), name=None, duration_s=3.5)
    with sqlite3.connect(tmp_path / "voices.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert "secret-key" not in dump


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "' OR 1=1 --", "ABCDEF0123456789", "", "0" * 17])
async def test_malformed_ids(tmp_path: Path, bad_id: str) -> None:
    store = VoiceStore(tmp_path / "voices.db")
    await store.add("", prompt(), name=None, duration_s=3.5)
    assert await store.get("", bad_id) is None
    assert not await store.delete("", bad_id)


async def test_voice_routes_and_reuse(tmp_path: Path, client_factory) -> None:
    engine = FakeEngine()
    settings = make_settings(tmp_path, api_keys=["alice", "bob"])
    audio = base64.b64encode(clip(4.0, "wav", sample_rate=48_000)).decode()
    async with (
        client_factory(settings, engine, Authorization="Bearer alice") as alice,
        client_factory(settings, engine, Authorization="Bearer bob") as bob,
    ):
        body = {"name": "Narrator", "ref_audio": audio, "ref_text": "Reference words."}
        response = await alice.post("/voices", json=body)
        assert response.status_code == 201, response.text
        voice = response.json()
        assert voice["voice"] == f"qwen3-clone-{voice['id']}" and voice["duration_s"] == pytest.approx(4.0)
        assert len(engine.prompt_calls) == 1 and engine.prompt_calls[0][1] == 24_000

        assert (await alice.get(f"/voices/{voice['id']}")).json() == voice
        assert (await alice.get(f"/voices/{voice['voice']}")).json() == voice
        assert (await alice.get("/voices")).json() == {"voices": [voice]}
        assert (await bob.get(f"/voices/{voice['id']}")).status_code == 404
        assert (await bob.get("/voices")).json() == {"voices": []}

        for path, payload in [
            ("/synthesize", {"text": "Hi.", "voice": voice["voice"]}),
            ("/synthesize/stream", {"text": "Hi.", "voice": voice["voice"]}),
            ("/v1/audio/speech", {"input": "Hi.", "voice": voice["voice"], "response_format": "wav"}),
        ]:
            assert (await alice.post(path, json=payload)).status_code == 200, path
            request = engine.requests[-1]
            assert request.model == "voice_clone" and request.ref_audio is None
            assert request.voice_prompt is not None and request.voice_prompt.ref_text == "Reference words."
            assert request.voice_prompt.ref_codes.shape == (5, 16)
            response = await bob.post(path, json=payload)
            assert response.status_code == 404 and "not found" in response.json()["error"]["message"]
        assert len(engine.prompt_calls) == 1  # encoded once, reused three times

        assert (await bob.delete(f"/voices/{voice['id']}")).status_code == 404
        assert (await alice.delete(f"/voices/{voice['id']}")).status_code == 204
        assert (await alice.get(f"/voices/{voice['id']}")).status_code == 404


async def test_voice_multipart_and_restart(tmp_path: Path, client_factory) -> None:
    settings = make_settings(tmp_path)
    files = {"ref_audio": ("me.ogg", clip(5.0, "ogg"), "audio/ogg")}
    async with client_factory(settings, FakeEngine()) as client:
        response = await client.post("/voices", data={"x_vector_only": "true"}, files=files)
        assert response.status_code == 201, response.text
        voice = response.json()
        assert voice["x_vector_only"] is True and voice["ref_text"] is None
        assert (
            await client.post("/voices", files={"ref_audio": ("s.wav", clip(1.0), "audio/wav")})
        ).status_code == 400
    async with client_factory(settings, FakeEngine()) as restarted:
        assert (await restarted.get("/voices")).json()["voices"] == [voice]
