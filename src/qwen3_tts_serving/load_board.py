"""How loaded each engine is, shared between the Triton model processes through one small file per engine.

An engine model writes its load (streams holding or promised a key/value slot, plus those queued for one)
whenever it takes requests and after every step; the front models of its checkpoint read the board of every
engine to place a new stream on the least loaded one. A memory-mapped file rather than a Triton request:
placement reads it for every stream and must not wait behind the engine's own queue. The file lives in the
engine model's folder of the built repository; its name is fixed, never taken from a request.

numpy only (the fronts do not import torch).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

BOARD_FILE = "load.board"
_FIELDS = ("load", "capacity", "updated_ms", "pid")
_SIZE = len(_FIELDS) * 8


def board_path(model_dir: Path) -> Path:
    return Path(model_dir) / BOARD_FILE


class LoadBoard:
    """One engine's board: ``publish`` (the engine) and ``load`` (the fronts).

    The file is created once at its full size and then only written in place (aligned int64 words, which a
    reader sees whole), so a reader never maps past its end even while an engine restarts.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._view: np.memmap | None = None

    @classmethod
    def create(cls, path: Path, *, capacity: int) -> LoadBoard:
        """The engine's side: a zeroed board of ``capacity`` slots (reused in place if one exists)."""
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(descriptor).st_size < _SIZE:
                os.ftruncate(descriptor, _SIZE)
        finally:
            os.close(descriptor)
        board = cls(path)
        view = board._open()
        assert view is not None
        view[:] = 0
        view[_FIELDS.index("capacity")] = capacity
        view[_FIELDS.index("pid")] = os.getpid()
        board.publish(0)
        return board

    def _open(self) -> np.memmap | None:
        if self._view is None:
            try:
                if self.path.stat().st_size < _SIZE:
                    return None
                self._view = np.memmap(self.path, dtype=np.int64, mode="r+", shape=(len(_FIELDS),))
            except (OSError, ValueError):
                return None
        return self._view

    def publish(self, load: int) -> None:
        view = self._open()
        if view is not None:
            view[0] = load
            view[2] = time.time_ns() // 1_000_000

    def load(self) -> int | None:
        """The engine's streams (held and queued); None while it has no board (not loaded yet)."""
        view = self._open()
        return None if view is None else int(view[0])

    def engine_gone(self) -> bool:
        """Whether the engine process that created the board has exited (its streams can send nothing
        more). False while that is unknown: no board yet, or no process recorded."""
        view = self._open()
        pid = 0 if view is None else int(view[_FIELDS.index("pid")])
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, under another user
            return False
        return False

    def capacity(self) -> int | None:
        view = self._open()
        return None if view is None else int(view[1])
