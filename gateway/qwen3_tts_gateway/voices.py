"""The voice library: cloned-voice prompts in a database, each visible only to the API key that created it.

A voice is stored as the prompt the ``voice_prompt`` model computed once (speaker embedding and reference
codes) with its transcript, so synthesis never re-encodes the reference audio. Ids are random hex; rows
are looked up by (owner, id) with bound parameters, and no path is ever built from user input.

One schema on two databases, through SQLAlchemy's asyncio layer: a SQLite file (aiosqlite) by default, or
PostgreSQL (asyncpg) when ``voice_db_url`` is set, so that every gateway replica sees the same voices. The
schema is Alembic's (``alembic/``); ``VoiceStore.open()`` upgrades it to the newest revision, serialized
across replicas that start together.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from qwen3_tts_serving.settings import Settings

from .backend import VoicePrompt
from .catalog import CLONE_VOICE_PREFIX, VOICE_ID_PATTERN
from .errors import EngineUnavailableError

logger = logging.getLogger(__name__)

ALEMBIC_DIR = Path(__file__).with_name("alembic")
_CODEBOOKS = 16
# Any constant shared by every replica: the key of the PostgreSQL advisory lock held while migrating.
_MIGRATION_LOCK_KEY = 0x5157_3354_5356_4F49  # "QW3TSVOI"
# Seconds a SQLite writer waits for another's lock (a second gateway on the same file) before failing.
_SQLITE_BUSY_TIMEOUT_S = 30.0
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_URL_FORMS = "postgresql://user:password@host:5432/database or sqlite:///path/to/voices.db"

metadata = sa.MetaData()
# The schema as the code reads and writes it; alembic/versions/ creates it (tests compare the two).
voices_table = sa.Table(
    "voices",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("name", sa.Text(), nullable=True),
    sa.Column("ref_text", sa.Text(), nullable=True),
    sa.Column("x_vector_only", sa.Boolean(), nullable=False),
    sa.Column("duration_s", sa.Double(), nullable=False),
    sa.Column("speaker_embedding", sa.LargeBinary(), nullable=False),
    sa.Column("ref_codes", sa.LargeBinary(), nullable=False),
    sa.Column("ref_codes_frames", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Index("voices_by_owner", "owner", "created_at"),
)
_META_COLUMNS = [
    voices_table.c[name] for name in ("id", "name", "ref_text", "x_vector_only", "duration_s", "created_at")
]


class VoiceLibraryUnavailableError(EngineUnavailableError):
    """The library's database cannot be reached: 503 with Retry-After, as for a model server that is down."""


def owner_of(api_key: str | None) -> str:
    """The stored owner of a key: its SHA-256 (keys themselves are never stored); "" without auth."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest() if api_key else ""


def database_url(location: str | Path) -> sa.URL:
    """The async URL of a voice library: a ``Path`` is a SQLite file; a string is a database URL, whose
    plain ``postgresql://`` / ``sqlite://`` scheme gets the async driver (asyncpg / aiosqlite)."""
    if isinstance(location, Path):
        return sa.URL.create("sqlite+aiosqlite", database=str(location))
    try:
        url = sa.make_url(location)
    except sa.exc.ArgumentError:
        raise ValueError(f"voice_db_url is not a database URL; use {_URL_FORMS}") from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"voice_db_url scheme {url.drivername!r} is not supported; use {_URL_FORMS}")
    if driver.startswith("sqlite") and url.database in (None, "", ":memory:"):
        raise ValueError(f"a SQLite voice library needs a file path; use {_URL_FORMS}")
    return url.set(drivername=driver)


def _create_engine(url: sa.URL, *, pool_size: int, immediate_transactions: bool = False) -> AsyncEngine:
    # hide_parameters: a logged database error must not carry key hashes or prompt bytes.
    if url.get_backend_name() == "postgresql":
        # pre-ping: a pooled connection dropped by the server (idle timeout, failover) is replaced, not used.
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True
        )
    if url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # No pool: every aiosqlite connection owns a thread, and a pooled one would outlive a store that is
    # never closed (tests, scripts); opening a SQLite file is cheap.
    engine = create_async_engine(
        url, poolclass=NullPool, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S}, hide_parameters=True
    )
    if immediate_transactions:
        # The driver's own transaction handling would run DDL outside a transaction. Here every transaction
        # takes SQLite's write lock at BEGIN, so a second migrating gateway waits for the first to commit.
        @event.listens_for(engine.sync_engine, "connect")
        def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            _use_wal(dbapi_connection)

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: sa.Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _use_wal(dbapi_connection: Any) -> None:
    """Put the file in WAL mode (persistent; readers never wait for the writer). Switching modes needs the
    file to itself and SQLite answers "locked" at once instead of waiting out the busy timeout, so gateways
    opening a new library together retry here for as long as that timeout."""
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
    pause_s = 0.005
    while True:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause_s > deadline:
                raise
        finally:
            cursor.close()
        time.sleep(pause_s)
        pause_s = min(2 * pause_s, 0.2)


def _alembic_migrate(connection: sa.Connection, revision: str, downgrade: bool) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction ends: replicas starting together migrate one after the other, and
        # the later ones find the schema already at head.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    config = AlembicConfig()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.attributes["connection"] = connection
    (command.downgrade if downgrade else command.upgrade)(config, revision)


async def _migrate(url: sa.URL, revision: str, *, downgrade: bool) -> None:
    engine = _create_engine(url, pool_size=1, immediate_transactions=True)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_alembic_migrate, revision, downgrade)
    finally:
        await engine.dispose()


async def upgrade_schema(url: sa.URL, revision: str = "head") -> None:
    """Bring the library's schema up to ``revision`` in one transaction, one migrator at a time."""
    await _migrate(url, revision, downgrade=False)


async def downgrade_schema(url: sa.URL, revision: str) -> None:
    """Take the library's schema back to ``revision`` (``base``: no table left but Alembic's own)."""
    await _migrate(url, revision, downgrade=True)


@dataclass(frozen=True)
class VoiceRecord:
    id: str
    name: str | None
    ref_text: str | None
    x_vector_only: bool
    duration_s: float
    created_at: float

    @property
    def voice(self) -> str:
        return f"{CLONE_VOICE_PREFIX}{self.id}"


def _record(row: sa.Row) -> VoiceRecord:
    voice_id, name, ref_text, x_vector_only, duration_s, created_at = row
    return VoiceRecord(voice_id, name, ref_text, bool(x_vector_only), float(duration_s), float(created_at))


def _owned(owner: str, voice_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(voices_table.c.owner == owner, voices_table.c.id == voice_id)


class VoiceStore:
    """The library of one gateway: ``location`` is a SQLite file (``Path``) or a database URL (``str``).

    The schema is brought to head by ``open()`` (the gateway's start-up) or else by the first query;
    ``close()`` releases the connections.
    """

    def __init__(self, location: str | Path, *, pool_size: int = 5) -> None:
        self._url = database_url(location)
        self._engine = _create_engine(self._url, pool_size=pool_size)
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> VoiceStore:
        """``voice_db_url`` when set (a shared database), else the SQLite file ``resolved_voice_db_path``."""
        if settings.voice_db_url is not None:
            return cls(settings.voice_db_url.get_secret_value(), pool_size=settings.voice_db_pool_size)
        return cls(settings.resolved_voice_db_path)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    async def open(self) -> None:
        """Upgrade the schema to head once (every replica may call it: they take turns)."""
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            async with self._unavailable_as_503():
                await upgrade_schema(self._url)
            logger.info("voice library ready (%s)", self._url.render_as_string(hide_password=True))
            self._ready = True

    async def close(self) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def _unavailable_as_503(self) -> AsyncIterator[None]:
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError) as exc:
            logger.warning("voice library (%s) unavailable: %s", self.backend, exc)
            raise VoiceLibraryUnavailableError("the voice library is unavailable; retry later") from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction (committed on success), on a schema at head."""
        await self.open()
        async with self._unavailable_as_503(), self._engine.begin() as connection:
            yield connection

    async def add(
        self, owner: str, prompt: VoicePrompt, *, name: str | None, duration_s: float
    ) -> VoiceRecord:
        codes = np.asarray(prompt.ref_codes, dtype="<i8").reshape(-1, _CODEBOOKS)
        record = VoiceRecord(
            id=secrets.token_hex(8),
            name=name,
            ref_text=prompt.ref_text,
            x_vector_only=prompt.x_vector_only,
            duration_s=duration_s,
            created_at=time.time(),
        )
        row = {
            "id": record.id,
            "owner": owner,
            "name": record.name,
            "ref_text": record.ref_text,
            "x_vector_only": record.x_vector_only,
            "duration_s": record.duration_s,
            "speaker_embedding": np.asarray(prompt.speaker_embedding, dtype="<f4").reshape(-1).tobytes(),
            "ref_codes": codes.tobytes(),
            "ref_codes_frames": codes.shape[0],
            "created_at": record.created_at,
        }
        async with self._connection() as connection:
            await connection.execute(voices_table.insert().values(row))
        return record

    async def list_owned(self, owner: str) -> list[VoiceRecord]:
        query = (
            sa.select(*_META_COLUMNS)
            .where(voices_table.c.owner == owner)
            .order_by(voices_table.c.created_at, voices_table.c.id)
        )
        async with self._connection() as connection:
            return [_record(row) for row in await connection.execute(query)]

    async def get(self, owner: str, voice_id: str) -> VoiceRecord | None:
        if not VOICE_ID_PATTERN.match(voice_id):
            return None
        async with self._connection() as connection:
            row = (await connection.execute(sa.select(*_META_COLUMNS).where(_owned(owner, voice_id)))).first()
        return _record(row) if row is not None else None

    async def get_prompt(self, owner: str, voice_id: str) -> VoicePrompt | None:
        if not VOICE_ID_PATTERN.match(voice_id):
            return None
        c = voices_table.c
        query = sa.select(
            c.speaker_embedding, c.ref_codes, c.ref_codes_frames, c.ref_text, c.x_vector_only
        ).where(_owned(owner, voice_id))
        async with self._connection() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        embedding, codes, frames, ref_text, x_vector_only = row
        return VoicePrompt(
            speaker_embedding=np.frombuffer(embedding, dtype="<f4").astype(np.float32),
            ref_codes=np.frombuffer(codes, dtype="<i8").astype(np.int64).reshape(frames, _CODEBOOKS),
            ref_text=ref_text,
            x_vector_only=bool(x_vector_only),
        )

    async def delete(self, owner: str, voice_id: str) -> bool:
        if not VOICE_ID_PATTERN.match(voice_id):
            return False
        async with self._connection() as connection:
            result = await connection.execute(voices_table.delete().where(_owned(owner, voice_id)))
        return result.rowcount > 0
