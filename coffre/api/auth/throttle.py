"""Slowing down password guessing, across every gateway process.

Each failed sign-in counts against the user name tried and against the address it came
from. Past a few free failures, the name (or address) waits before its next attempt, twice
as long after each further failure, up to a cap; a successful sign-in clears the name's
count. A waiting attempt is refused without checking its password, so guessing costs the
attacker time, not the gateway scrypt work; an attempt let through counts as a failure
from then until its password proves right, so that a burst sent at once gets no more
checks than the free ones. The counts live in the sovereign side's
sessions file beside the keyring (never on the host), keyed by SHA-256, so the file names
nobody.

Locking a name by its failures lets anyone delay a patient's sign-in; the cap keeps that
to minutes, and the address count stops one source spraying many names.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from coffre.api.auth.onetime import open_private

FREE_FAILURES_PER_NAME = 5
FREE_FAILURES_PER_ADDRESS = 20
FIRST_WAIT_SECONDS = 30.0
LONGEST_WAIT_SECONDS = 900.0
FORGOTTEN_AFTER_SECONDS = 86400.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sign_in_failures (
    key BLOB PRIMARY KEY, failures INTEGER NOT NULL, locked_until REAL NOT NULL,
    last_failure REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who tries: the user name as typed, and the client's address (None if unknown)."""

    username: str
    address: str | None

    def counted(self) -> list[tuple[bytes, int]]:
        """Each counted key with its number of free failures."""
        keys = [(_digest("name", self.username.strip().casefold()), FREE_FAILURES_PER_NAME)]
        if self.address:
            keys.append((_digest("address", self.address), FREE_FAILURES_PER_ADDRESS))
        return keys


def _digest(kind: str, value: str) -> bytes:
    return hashlib.sha256(f"{kind}:{value}".encode()).digest()


def wait_after(failures: int, free: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures, ``free`` of them free."""
    if failures < free:
        return 0.0
    return min(FIRST_WAIT_SECONDS * 2.0 ** (failures - free), LONGEST_WAIT_SECONDS)


class SignInThrottle:
    """Failed sign-ins per name and per address, in a SQLite file shared by the processes."""

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = open_private(path, _SCHEMA)

    def admit(self, attempt: Attempt, now: float) -> int:
        """0 when ``attempt`` may have its password checked now, and is then counted as a
        failure until :meth:`succeeded` says otherwise; else whole seconds to wait. The
        check and the count are one transaction: attempts made at once count against each
        other (counted only once their password failed, a burst all got through)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                wait = self._wait(attempt, now)
                if not wait:
                    self._count_failure(attempt, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return wait

    def seconds_to_wait(self, attempt: Attempt, now: float) -> int:
        """Whole seconds before ``attempt`` may be checked; 0 when it may be now."""
        with self._lock:
            return self._wait(attempt, now)

    def succeeded(self, attempt: Attempt) -> None:
        """The name's count starts again; the address's loses the failure counted ahead."""
        (name_key, _free), *others = attempt.counted()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM sign_in_failures WHERE key = ?", (name_key,))
                for key, free in others:
                    self._db.execute(
                        "UPDATE sign_in_failures SET failures = failures - 1, locked_until ="
                        " CASE WHEN failures - 1 < ? THEN 0 ELSE locked_until END"
                        " WHERE key = ? AND failures > 0",
                        (free, key),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _wait(self, attempt: Attempt, now: float) -> int:
        digests = [key for key, _free in attempt.counted()]
        marks = ",".join("?" * len(digests))
        row = self._db.execute(
            f"SELECT max(locked_until) FROM sign_in_failures WHERE key IN ({marks})", digests
        ).fetchone()
        locked_until = row[0] if row and row[0] is not None else 0.0
        return max(0, math.ceil(locked_until - now))

    def _count_failure(self, attempt: Attempt, now: float) -> None:
        """A failure against the name and the address; a long-quiet count restarts."""
        self._db.execute(
            "DELETE FROM sign_in_failures WHERE last_failure < ?", (now - FORGOTTEN_AFTER_SECONDS,)
        )
        for key, free in attempt.counted():
            row = self._db.execute(
                "SELECT failures FROM sign_in_failures WHERE key = ?", (key,)
            ).fetchone()
            failures = (row[0] if row else 0) + 1
            self._db.execute(
                "INSERT OR REPLACE INTO sign_in_failures VALUES (?, ?, ?, ?)",
                (key, failures, now + wait_after(failures, free), now),
            )
