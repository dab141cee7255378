"""The engines' load boards: what a front reads to place a stream, written by the engine in place."""

from __future__ import annotations

import os
from pathlib import Path

from qwen3_tts_serving.load_board import LoadBoard, board_path


def test_a_board_reads_what_its_engine_published(tmp_path: Path) -> None:
    path = board_path(tmp_path)
    reader = LoadBoard(path)
    assert reader.load() is None  # no engine yet: the front places elsewhere
    engine = LoadBoard.create(path, capacity=64)
    assert (reader.load(), reader.capacity()) == (0, 64)
    engine.publish(5)
    assert reader.load() == 5


def test_a_restarted_engine_reuses_the_file_in_place(tmp_path: Path) -> None:
    """Recreating keeps the inode, so a front that mapped the old board reads the new engine's figures."""
    path = board_path(tmp_path)
    first = LoadBoard.create(path, capacity=8)
    first.publish(3)
    reader = LoadBoard(path)
    assert reader.load() == 3
    inode = os.stat(path).st_ino
    LoadBoard.create(path, capacity=8).publish(1)
    assert os.stat(path).st_ino == inode and reader.load() == 1


def test_a_short_or_foreign_file_is_no_board(tmp_path: Path) -> None:
    path = board_path(tmp_path)
    path.write_bytes(b"\x00" * 4)
    assert LoadBoard(path).load() is None
