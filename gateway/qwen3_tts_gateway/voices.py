"""The voice library: cloned-voice prompts in SQLite, each visible only to the API key that created it.

A voice is stored as the prompt the ``voice_prompt`` model computed once (speaker embedding and reference
codes) with its transcript, so synthesis never re-encodes the reference audio. Ids are random hex; rows
are looked up by (owner, id) with bound parameters, and no path is ever built from user input.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import CLONE_VOICE_PREFIX, VOICE_ID_PATTERN
from .engine import VoicePrompt

_SCHEMA = """
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
_META_COLUMNS = "id, name, ref_text, x_vector_only, duration_s, created_at"
_CODEBOOKS = 16


def owner_of(api_key: str | None) -> str:
    """The stored owner of a key: its SHA-256 (keys themselves are never stored); "" without auth."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest() if api_key else ""


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


def _record(row: tuple) -> VoiceRecord:
    voice_id, name, ref_text, x_vector_only, duration_s, created_at = row
    return VoiceRecord(voice_id, name, ref_text, bool(x_vector_only), float(duration_s), float(created_at))


class VoiceStore:
    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._init_lock = threading.Lock()
        self._initialised = False

    def _connect(self) -> sqlite3.Connection:
        if not self._initialised:
            with self._init_lock:
                if not self._initialised:
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    with sqlite3.connect(self._path, timeout=10) as conn:
                        conn.execute("PRAGMA journal_mode=WAL")
                        conn.executescript(_SCHEMA)
                    self._initialised = True
        return sqlite3.connect(self._path, timeout=10)

    def _run(self, sql: str, params: tuple) -> list[tuple]:
        conn = self._connect()
        try:
            with conn:
                rows = conn.execute(sql, params).fetchall()
                return rows
        finally:
            conn.close()

    def _rowcount(self, sql: str, params: tuple) -> int:
        conn = self._connect()
        try:
            with conn:
                return conn.execute(sql, params).rowcount
        finally:
            conn.close()

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
        params = (
            record.id,
            owner,
            record.name,
            record.ref_text,
            int(record.x_vector_only),
            record.duration_s,
            np.asarray(prompt.speaker_embedding, dtype="<f4").reshape(-1).tobytes(),
            codes.tobytes(),
            codes.shape[0],
            record.created_at,
        )
        await asyncio.to_thread(self._run, "INSERT INTO voices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", params)
        return record

    async def list_owned(self, owner: str) -> list[VoiceRecord]:
        sql = f"SELECT {_META_COLUMNS} FROM voices WHERE owner = ? ORDER BY created_at"
        return [_record(row) for row in await asyncio.to_thread(self._run, sql, (owner,))]

    async def get(self, owner: str, voice_id: str) -> VoiceRecord | None:
        if not VOICE_ID_PATTERN.match(voice_id):
            return None
        sql = f"SELECT {_META_COLUMNS} FROM voices WHERE owner = ? AND id = ?"
        rows = await asyncio.to_thread(self._run, sql, (owner, voice_id))
        return _record(rows[0]) if rows else None

    async def get_prompt(self, owner: str, voice_id: str) -> VoicePrompt | None:
        if not VOICE_ID_PATTERN.match(voice_id):
            return None
        sql = (
            "SELECT speaker_embedding, ref_codes, ref_codes_frames, ref_text, x_vector_only "
            "FROM voices WHERE owner = ? AND id = ?"
        )
        rows = await asyncio.to_thread(self._run, sql, (owner, voice_id))
        if not rows:
            return None
        embedding, codes, frames, ref_text, x_vector_only = rows[0]
        return VoicePrompt(
            speaker_embedding=np.frombuffer(embedding, dtype="<f4").astype(np.float32),
            ref_codes=np.frombuffer(codes, dtype="<i8").astype(np.int64).reshape(frames, _CODEBOOKS),
            ref_text=ref_text,
            x_vector_only=bool(x_vector_only),
        )

    async def delete(self, owner: str, voice_id: str) -> bool:
        if not VOICE_ID_PATTERN.match(voice_id):
            return False
        sql = "DELETE FROM voices WHERE owner = ? AND id = ?"
        return await asyncio.to_thread(self._rowcount, sql, (owner, voice_id)) > 0
