"""The voice library on SQLite and on a real PostgreSQL server (every test runs on both, see ``voice_db``):
persistence across instances, per-key visibility, and its routes."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from postgres import PostgresCluster
from qwen3_tts_gateway import create_app
from qwen3_tts_gateway.backend import VoicePrompt
from qwen3_tts_gateway.voices import VoiceLibraryUnavailableError, VoiceStore, owner_of

from qwen3_tts_serving.settings import Settings

from .conftest import clip, make_settings
from .fakes import FakeEngine

StoreFactory = Callable[..., VoiceStore]


def prompt(frames: int = 4) -> VoicePrompt:
    codes = np.arange(frames * 16, dtype=np.int64).reshape(frames, 16)
    return VoicePrompt(np.linspace(0, 1, 8, dtype=np.float32), codes, "the transcript", frames == 0)


def library_settings(tmp_path: Path, voice_db: Path | str, **overrides: object) -> Settings:
    """Settings whose voice library is ``voice_db``: a SQLite file or a database URL."""
    where = {"voice_db_path": voice_db} if isinstance(voice_db, Path) else {"voice_db_url": voice_db}
    return make_settings(tmp_path, **where, **overrides)


@pytest.fixture
async def open_store(voice_db: Path | str) -> AsyncIterator[StoreFactory]:
    """``open_store(location=voice_db)``: a new VoiceStore (closed at the end of the test)."""
    stores: list[VoiceStore] = []

    def build(location: Path | str = voice_db) -> VoiceStore:
        stores.append(VoiceStore(location))
        return stores[-1]

    yield build
    for store in stores:
        await store.close()


@asynccontextmanager
async def gateway(settings: Settings, engine: FakeEngine, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a gateway app whose lifespan runs (schema upgrade at start, store closed at end)."""
    app = create_app(settings=settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers
        ) as client:
            yield client


def dump_library(voice_db: Path | str, postgres_cluster: Callable[[], PostgresCluster]) -> str:
    """Everything the database holds, as SQL text (SQLite's iterdump, PostgreSQL's pg_dump)."""
    if isinstance(voice_db, Path):
        with sqlite3.connect(voice_db) as conn:
            return "\n".join(conn.iterdump())
    return postgres_cluster().dump(voice_db)


async def test_persists_across_instances(
    tmp_path: Path, voice_db: Path | str, open_store: StoreFactory
) -> None:
    if isinstance(voice_db, Path):
        voice_db = tmp_path / "sub" / "voices.db"  # a missing folder is created
    record = await open_store(voice_db).add(owner_of("a"), prompt(), name="Alice", duration_s=4.2)
    assert len(record.id) == 16 and record.voice == f"qwen3-clone-{record.id}"
    reopened = open_store(voice_db)
    assert await reopened.get(owner_of("a"), record.id) == record
    stored = await reopened.get_prompt(owner_of("a"), record.id)
    assert stored is not None and stored.ref_text == "the transcript" and not stored.x_vector_only
    np.testing.assert_array_equal(stored.ref_codes, prompt().ref_codes)
    np.testing.assert_array_equal(stored.speaker_embedding, prompt().speaker_embedding)
    assert stored.ref_codes.dtype == np.int64 and stored.speaker_embedding.dtype == np.float32


async def test_visible_only_to_owner(open_store: StoreFactory) -> None:
    store = open_store()
    mine = await store.add(owner_of("a"), prompt(), name=None, duration_s=3.5)
    await store.add(owner_of("b"), prompt(0), name=None, duration_s=3.5)
    assert [r.id for r in await store.list_owned(owner_of("a"))] == [mine.id]
    assert await store.get(owner_of("b"), mine.id) is None
    assert await store.get_prompt(owner_of("b"), mine.id) is None
    assert not await store.delete(owner_of("b"), mine.id)
    assert await store.delete(owner_of("a"), mine.id)
    assert await store.get(owner_of("a"), mine.id) is None


async def test_lists_in_creation_order(open_store: StoreFactory) -> None:
    store = open_store()
    added = [await store.add(owner_of("a"), prompt(), name=f"v{n}", duration_s=3.5) for n in range(3)]
    assert await store.list_owned(owner_of("a")) == added
    assert await store.list_owned(owner_of("nobody")) == []


async def test_keys_are_not_stored(
    voice_db: Path | str, open_store: StoreFactory, request: pytest.FixtureRequest
) -> None:
    await open_store().add(owner_of("secret-key"), prompt(), name=None, duration_s=3.5)
    dump = dump_library(voice_db, lambda: request.getfixturevalue("postgres_cluster"))
    assert owner_of("secret-key") in dump and "secret-key" not in dump


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "' OR 1=1 --", "ABCDEF0123456789", "", "0" * 17])
async def test_malformed_ids(open_store: StoreFactory, bad_id: str) -> None:
    store = open_store()
    await store.add("", prompt(), name=None, duration_s=3.5)
    assert await store.get("", bad_id) is None
    assert await store.get_prompt("", bad_id) is None
    assert not await store.delete("", bad_id)
    assert len(await store.list_owned("")) == 1


async def test_voice_routes_and_reuse(tmp_path: Path, voice_db: Path | str) -> None:
    engine = FakeEngine()
    settings = library_settings(tmp_path, voice_db, api_keys=["alice", "bob"])
    audio = base64.b64encode(clip(4.0, "wav", sample_rate=48_000)).decode()
    async with (
        gateway(settings, engine, Authorization="Bearer alice") as alice,
        gateway(settings, engine, Authorization="Bearer bob") as bob,
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
        missing = await bob.get(f"/voices/{voice['id']}")
        assert missing.status_code == 404 and voice["id"] in missing.json()["error"]["message"]
        assert missing.json()["error"]["param"] == "voice_id"
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


async def test_voice_multipart_and_restart(tmp_path: Path, voice_db: Path | str) -> None:
    settings = library_settings(tmp_path, voice_db)
    files = {"ref_audio": ("me.ogg", clip(5.0, "ogg"), "audio/ogg")}
    async with gateway(settings, FakeEngine()) as client:
        response = await client.post("/voices", data={"x_vector_only": "true"}, files=files)
        assert response.status_code == 201, response.text
        voice = response.json()
        assert voice["x_vector_only"] is True and voice["ref_text"] is None
        assert (
            await client.post("/voices", files={"ref_audio": ("s.wav", clip(1.0), "audio/wav")})
        ).status_code == 400
    async with gateway(settings, FakeEngine()) as restarted:
        assert (await restarted.get("/voices")).json()["voices"] == [voice]


async def test_library_outage_is_503_until_it_is_back(tmp_path: Path) -> None:
    """A database that goes away: voice routes answer 503 with Retry-After (built-in timbres go on), and the
    same gateway serves the voices again once it is back. A gateway does not start without its library."""
    clone = {"name": "kept", "ref_audio": base64.b64encode(clip(4.0)).decode()}
    with PostgresCluster() as cluster:  # its own server: this test stops it
        settings = library_settings(tmp_path, cluster.create_database(), retry_after_s=7)
        async with gateway(settings, FakeEngine()) as client:
            voice = (await client.post("/voices", json=clone)).json()
            cluster.stop_server()
            for response in [
                await client.get("/voices"),
                await client.post("/voices", json=clone),
                await client.post("/synthesize", json={"text": "Hi.", "voice": voice["voice"]}),
            ]:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["message"] == "the voice library is unavailable; retry later"
                assert response.headers["retry-after"] == "7"
            assert (
                await client.post("/synthesize", json={"text": "Hi.", "speaker": "ryan"})
            ).status_code == 200
            cluster.start_server()
            assert (await client.get("/voices")).json() == {"voices": [voice]}
            assert (
                await client.post("/synthesize", json={"text": "Hi.", "voice": voice["voice"]})
            ).status_code == 200
            # A restart between two requests (a failover): the pooled connections it cut are replaced.
            cluster.stop_server()
            cluster.start_server()
            assert (await client.get("/voices")).json() == {"voices": [voice]}

        cluster.stop_server()
        app = create_app(settings=settings, engine=FakeEngine())
        with pytest.raises(VoiceLibraryUnavailableError):
            async with app.router.lifespan_context(app):
                pass
        await app.state.voices.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "scheme 'mysql' is not supported"),
        ("not a url", "is not a database URL"),
        ("sqlite://", "needs a file path"),
    ],
)
def test_bad_url(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        VoiceStore(url)
    assert "postgresql://user:password@host:5432/database" in str(caught.value)


def test_settings_pick_the_library(tmp_path: Path) -> None:
    assert VoiceStore.from_settings(make_settings(tmp_path)).backend == "sqlite"
    shared = make_settings(tmp_path, voice_db_url="postgresql://u:pw@db.internal/voices")
    assert VoiceStore.from_settings(shared).backend == "postgresql"
    assert "pw" not in repr(shared) and "pw" not in str(shared.voice_db_url)
