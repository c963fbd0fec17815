"""What may be used once only, across every gateway process: authorisation codes, the
``jti`` of client assertions, and portal sessions signed out.

A small SQLite file beside the keyring, on the sovereign side (the host never sees it):
codes are looked up by their SHA-256, so the file holds no usable code, and a grant is
taken out with the code in one transaction, so two processes can never both redeem it.
A redeemed code is remembered with the access token it was exchanged for, as long as the
token lives: a code presented again was stolen or replayed, and RFC 6749 §4.1.2 asks that
the token it gave be revoked.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SESSIONS_SUFFIX = ".auth.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (digest BLOB PRIMARY KEY, grant_json TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS seen (key BLOB PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spent (digest BLOB PRIMARY KEY, token_id TEXT NOT NULL, expires REAL NOT NULL);
"""
_REVOKED = "revoked token\x1f"


def sessions_file(keyring: Path) -> Path:
    return keyring.with_name(keyring.stem + SESSIONS_SUFFIX)


def _digest(text: str) -> bytes:
    """A lone surrogate (``"\\ud800"`` in a token's JSON) is hashed as it came, not a 500."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def open_private(path: Path | str, schema: str) -> sqlite3.Connection:
    """The sessions file (or ``:memory:``), readable by its owner only, shared by the
    gateway's processes, with ``schema`` created if missing."""
    if str(path) != ":memory:":
        # 0600 from the start; SQLite gives its journal files the same mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    if str(path) != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)
    return db


class OneTime:
    """Single-use codes and seen identifiers, each until it expires."""

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = open_private(path, _SCHEMA)

    def _purge(self, now: float) -> None:
        self._db.execute("DELETE FROM codes WHERE expires < ?", (now,))
        self._db.execute("DELETE FROM seen WHERE expires < ?", (now,))
        self._db.execute("DELETE FROM spent WHERE expires < ?", (now,))

    def put_code(self, code: str, grant: dict[str, Any], expires: float) -> None:
        with self._lock:
            self._purge(time.time())
            self._db.execute(
                "INSERT INTO codes VALUES (?, ?, ?)", (_digest(code), json.dumps(grant), expires)
            )

    def take_code(self, code: str, token_id: str, token_expires: float) -> dict[str, Any] | None:
        """The grant of ``code`` if it is live, removing it: a second call gets None. The
        code is remembered as spent on the token ``token_id`` until ``token_expires``."""
        digest, now = _digest(code), time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "DELETE FROM codes WHERE digest = ? RETURNING grant_json, expires", (digest,)
            ).fetchall()
            row = rows[0] if rows else None
            if row is not None and row[1] >= now:
                self._db.execute(
                    "INSERT OR REPLACE INTO spent VALUES (?, ?, ?)",
                    (digest, token_id, token_expires),
                )
        if row is None or row[1] < now:
            return None
        grant: dict[str, Any] = json.loads(row[0])
        return grant

    def revoke_spent(self, code: str) -> bool:
        """Whether ``code`` was redeemed already; if so, the token it gave is revoked."""
        with self._lock:
            row = self._db.execute(
                "SELECT token_id, expires FROM spent WHERE digest = ?", (_digest(code),)
            ).fetchone()
        if row is None:
            return False
        self.first_use(_REVOKED + row[0], row[1])
        return True

    def revoked(self, token_id: str) -> bool:
        return self.seen(_REVOKED + token_id)

    def first_use(self, key: str, expires: float) -> bool:
        """True the first time ``key`` is seen before ``expires``, False ever after."""
        with self._lock:
            self._purge(time.time())
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO seen VALUES (?, ?)", (_digest(key), expires)
            )
            return cursor.rowcount == 1

    def seen(self, key: str) -> bool:
        """Whether ``key`` was used and has not expired yet (a revocation, say)."""
        with self._lock:
            row = self._db.execute(
                "SELECT expires FROM seen WHERE key = ?", (_digest(key),)
            ).fetchone()
        return row is not None and row[0] >= time.time()

    def close(self) -> None:
        self._db.close()
