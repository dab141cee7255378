"""The voice library's Alembic migrations on SQLite and a real PostgreSQL server: from an empty database,
from a voices.db written before migrations existed, and with several gateways starting at once."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from qwen3_tts_gateway.voices import (
    ALEMBIC_DIR,
    VoiceStore,
    database_url,
    downgrade_schema,
    metadata,
    owner_of,
    upgrade_schema,
)
from sqlalchemy.ext.asyncio import create_async_engine

from .test_voice_store import prompt

HEAD = ScriptDirectory(str(ALEMBIC_DIR)).get_current_head()

# The layout (and pragma) the gateway created itself before the library had migrations: a voices.db of a
# deployment of that version must keep its voices.
LEGACY_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS voices (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT,
    ref_text TEXT,
    x_vector_only INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    speaker_embedding BLOB NOT NULL,
    ref_codes BLOB NOT NULL,
    ref_codes_frames INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS voices_by_owner ON voices (owner, created_at);
"""

# One gateway's start-up, in a process of its own: import, say ready, wait for the go, open the library.
_START_ONE = """
import asyncio, pathlib, sys, time
from qwen3_tts_gateway.voices import VoiceStore

async def start(url):
    store = VoiceStore(url)
    await store.open()
    await store.close()

ready, go = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.002)
asyncio.run(start(sys.argv[1]))
"""
_STARTERS = 4


def url_of(voice_db: Path | str) -> str:
    return f"sqlite:///{voice_db}" if isinstance(voice_db, Path) else voice_db


async def inspect_library(voice_db: Path | str) -> tuple[list[str], list[str], list[tuple]]:
    """(alembic_version rows, table names, schema differences from ``metadata``)."""
    engine = create_async_engine(database_url(url_of(voice_db)))

    def read(connection: sa.Connection) -> tuple[list[str], list[str], list[tuple]]:
        tables = sorted(sa.inspect(connection).get_table_names())
        versions = []
        if "alembic_version" in tables:
            versions = list(connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
        diff = (
            compare_metadata(MigrationContext.configure(connection), metadata) if "voices" in tables else []
        )
        return versions, tables, diff

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_and_back(voice_db: Path | str) -> None:
    url = database_url(url_of(voice_db))
    await upgrade_schema(url)
    assert await inspect_library(voice_db) == ([HEAD], ["alembic_version", "voices"], [])
    await upgrade_schema(url)  # at head already: nothing to do
    assert (await inspect_library(voice_db))[0] == [HEAD]
    await downgrade_schema(url, "base")
    assert await inspect_library(voice_db) == ([], ["alembic_version"], [])
    store = VoiceStore(voice_db)
    try:
        record = await store.add(owner_of("a"), prompt(), name="again", duration_s=3.0)  # upgrades lazily
        assert await store.list_owned(owner_of("a")) == [record]
    finally:
        await store.close()


async def test_a_pre_migrations_voices_db_keeps_its_voices(tmp_path: Path) -> None:
    path = tmp_path / "voices.db"
    old = prompt(3)
    codes = np.asarray(old.ref_codes, dtype="<i8")
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY_SCHEMA)
        conn.execute(
            "INSERT INTO voices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "00112233445566ff",
                owner_of("a"),
                "Old",
                old.ref_text,
                int(old.x_vector_only),
                4.5,
                np.asarray(old.speaker_embedding, dtype="<f4").tobytes(),
                codes.tobytes(),
                codes.shape[0],
                1700000000.5,
            ),
        )
    conn.close()

    store = VoiceStore(path)
    try:
        await store.open()
        [record] = await store.list_owned(owner_of("a"))
        assert (record.id, record.name, record.duration_s, record.created_at) == (
            "00112233445566ff",
            "Old",
            4.5,
            1700000000.5,
        )
        assert record.x_vector_only is False and record.ref_text == "the transcript"
        kept = await store.get_prompt(owner_of("a"), record.id)
        assert kept is not None
        np.testing.assert_array_equal(kept.ref_codes, old.ref_codes)
        np.testing.assert_array_equal(kept.speaker_embedding, old.speaker_embedding)
        assert await store.get(owner_of("b"), record.id) is None
        new = await store.add(owner_of("a"), prompt(), name="New", duration_s=3.0)
        assert [r.id for r in await store.list_owned(owner_of("a"))] == [record.id, new.id]
    finally:
        await store.close()
    versions, tables, _ = await inspect_library(path)
    assert versions == [HEAD] and tables == ["alembic_version", "voices"]


async def test_a_foreign_voices_table_is_refused(voice_db: Path | str) -> None:
    engine = create_async_engine(database_url(url_of(voice_db)))
    async with engine.begin() as connection:
        await connection.execute(sa.text("CREATE TABLE voices (id TEXT PRIMARY KEY, audio TEXT)"))
    await engine.dispose()
    store = VoiceStore(voice_db)
    try:
        with pytest.raises(RuntimeError, match=r"a table 'voices' exists with other columns \(audio, id\)"):
            await store.open()
    finally:
        await store.close()


def test_gateways_starting_together_migrate_once(voice_db: Path | str, tmp_path: Path) -> None:
    """Several processes open one empty library at the same instant: all start, the schema is made once."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(_STARTERS)]
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _START_ONE, url_of(voice_db), str(flag), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for flag in ready
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(flag.exists() for flag in ready):
            assert time.monotonic() < deadline, "the starters did not get ready"
            assert all(p.poll() is None for p in starters), [p.communicate()[0] for p in starters]
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=120)[0] for p in starters]
    finally:
        for p in starters:
            p.kill()
    assert [p.returncode for p in starters] == [0] * _STARTERS, "\n".join(outputs)
    assert asyncio.run(inspect_library(voice_db)) == ([HEAD], ["alembic_version", "voices"], [])


async def test_a_new_sqlite_library_locked_by_another_process_waits_for_it(tmp_path: Path) -> None:
    """Switching a new file to WAL needs it to itself, and while another process is writing to it SQLite says
    "locked" at once instead of waiting out the busy timeout: the gateway waits until the file is free."""
    path = tmp_path / "voices.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer, as another gateway migrating the file
    holder.execute("CREATE TABLE held (x)")
    loop = asyncio.get_running_loop()
    release = loop.call_later(0.5, holder.execute, "COMMIT")
    store = VoiceStore(path)
    try:
        started = time.monotonic()
        await store.open()
        assert time.monotonic() - started >= 0.4
        assert await store.list_owned("someone") == []
    finally:
        release.cancel()
        await store.close()
        holder.close()
