"""What the tests read of an SQLite storage's FTS5 index that SQLite does not tell."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path


def index_runs(path: Path | str) -> int:
    """The runs (segments) of the storage's token index, from FTS5's structure record:
    a 4-byte cookie, then the number of levels and of segments as SQLite varints."""
    with closing(sqlite3.connect(path)) as db:
        (record,) = db.execute("SELECT block FROM token_index_data WHERE id = 10").fetchone()
    _, at = _varint(record, 4)
    segments, _ = _varint(record, at)
    return segments


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[at]
        at += 1
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            return value, at
