"""The embedded storage: one SQLite file in WAL mode.

Every acknowledged write is durable: transactions commit with ``synchronous=FULL`` and a
write takes the database's write lock up front (``BEGIN IMMEDIATE``), so that versions
are numbered without races between server processes. sqlite3's errors are turned into
StorageError here and nowhere else.
"""

from __future__ import annotations

import fcntl
import heapq
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coffre.exceptions import StorageError
from coffre.storage.base import HistoryQuery, SealedEvent, SealedVersion

SCHEMA = """
CREATE TABLE IF NOT EXISTS coffre_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    loc BLOB NOT NULL,
    version INTEGER NOT NULL,
    kind BLOB NOT NULL,
    comp BLOB NOT NULL,
    ts INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (loc, version)
);
CREATE INDEX IF NOT EXISTS versions_by_kind ON versions (kind, seq);
CREATE TABLE IF NOT EXISTS current (
    loc BLOB PRIMARY KEY,
    version INTEGER NOT NULL,
    kind BLOB NOT NULL,
    deleted INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS current_by_kind ON current (kind) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS tokens (
    token BLOB NOT NULL,
    loc BLOB NOT NULL,
    PRIMARY KEY (token, loc)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_by_loc ON tokens (loc);
CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tree_nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_events (
    digest BLOB PRIMARY KEY,
    comp BLOB NOT NULL,
    leaf INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_by_comp ON audit_events (comp, leaf);
CREATE TABLE IF NOT EXISTS data_keys (
    comp BLOB PRIMARY KEY,
    kek_id TEXT NOT NULL,
    wrapped BLOB NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = "loc, version, kind, comp, ts, deleted, body, seq"
# Tokens a compound SELECT of ``find`` looks up at most (SQLite allows 500 branches).
_BRANCHES = 250
# Prepared statements a connection keeps: ``find`` and the batched reads have one for
# each number of tokens or locations.
_STATEMENT_CACHE = 1024
# Pages the write connection keeps in memory, in KiB (SQLite's default, which the read
# connection keeps, is 2 MiB): a write inserts each of a record's index tokens at a random
# place of the token index, and once that index outgrows the cache every insert reads its
# page back from the file. Reads keep the default so that a long export, which reads every
# page once, does not grow the server by the cache's size.
_WRITE_CACHE_KIB = 65536


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _row(row: tuple[Any, ...]) -> SealedVersion:
    return SealedVersion(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7])


class _Reader:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def _one(self, sql: str, args: tuple[Any, ...]) -> SealedVersion | None:
        try:
            row = self._db.execute(sql, args).fetchone()
        except sqlite3.Error as error:
            raise StorageError(f"SQLite read failed: {error}") from None
        return _row(row) if row else None

    def latest(self, loc: bytes) -> SealedVersion | None:
        return self._one(
            f"SELECT {_COLUMNS} FROM versions WHERE loc = ? ORDER BY version DESC LIMIT 1", (loc,)
        )

    def version(self, loc: bytes, version: int) -> SealedVersion | None:
        return self._one(
            f"SELECT {_COLUMNS} FROM versions WHERE loc = ? AND version = ?", (loc, version)
        )

    def find(
        self, tokens: Sequence[bytes], after: bytes = b"", limit: int | None = None
    ) -> list[bytes]:
        parts = [
            self._find_some(tokens[start : start + _BRANCHES], after, limit)
            for start in range(0, len(tokens), _BRANCHES)
        ]
        if len(parts) == 1:
            return parts[0]
        merged = list(dict.fromkeys(heapq.merge(*parts)))
        return merged if limit is None else merged[:limit]

    def _find_some(self, tokens: Sequence[bytes], after: bytes, limit: int | None) -> list[bytes]:
        """One SELECT a token, in a compound that SQLite merges in location order (the
        primary key's order within a token), so that the LIMIT stops it early."""
        branch = "SELECT loc FROM tokens WHERE token = ? AND loc > ?"
        sql = " UNION ".join([branch] * len(tokens)) + " ORDER BY loc"
        args: list[Any] = [value for token in tokens for value in (token, after)]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [row[0] for row in self._db.execute(sql, args).fetchall()]

    def carrying(self, tokens: Sequence[bytes], locs: Sequence[bytes]) -> set[bytes]:
        if not tokens or not locs:
            return set()
        rows = self._db.execute(
            f"SELECT loc FROM tokens WHERE token IN ({_marks(len(tokens))})"
            f" AND loc IN ({_marks(len(locs))})",
            [*tokens, *locs],
        )
        return {row[0] for row in rows}

    def latest_each(self, locs: Sequence[bytes]) -> dict[bytes, SealedVersion]:
        if not locs:
            return {}
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM versions v WHERE loc IN ({_marks(len(locs))})"
            " AND version = (SELECT max(version) FROM versions WHERE loc = v.loc)",
            locs,
        ).fetchall()
        return {row[0]: _row(row) for row in rows}

    def kinds_present(self, kinds: Sequence[bytes]) -> set[bytes]:
        if not kinds:
            return set()
        rows = self._db.execute(
            f"WITH wanted(kind) AS (VALUES {', '.join(['(?)'] * len(kinds))})"
            " SELECT kind FROM wanted WHERE EXISTS"
            " (SELECT 1 FROM current c WHERE c.kind = wanted.kind AND c.deleted = 0)",
            kinds,
        )
        return {bytes(row[0]) for row in rows}

    def tokens_of(self, loc: bytes) -> list[bytes]:
        rows = self._db.execute("SELECT token FROM tokens WHERE loc = ?", (loc,)).fetchall()
        return [bytes(row[0]) for row in rows]

    def joined_tokens(self, locs: Sequence[bytes]) -> dict[bytes, bytes]:
        """Read through ``tokens_by_loc``, whose entries are in (loc, token) order: the
        tokens come in order (group_concat keeps its input's order, though SQLite does not
        promise it; a caller that finds them out of order reads them again one by one)."""
        if not locs:
            return {}
        rows = self._db.execute(
            "SELECT loc, CAST(group_concat(token, '') AS BLOB) FROM tokens INDEXED BY"
            f" tokens_by_loc WHERE loc IN ({_marks(len(locs))}) GROUP BY loc",
            locs,
        )
        return dict(rows)

    def leaf_count(self) -> int:
        row = self._db.execute("SELECT max(idx) FROM leaves").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def leaves(self, start: int, end: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT data FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
        if len(rows) == end - start:  # indices are unique integers: no room for a gap
            return [row[0] for row in rows]
        # The end of the log, or a gap: the indices tell which (a third faster without them).
        rows = self._db.execute(
            "SELECT idx, data FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
        if [row[0] for row in rows] != list(range(start, start + len(rows))):
            raise StorageError(f"the log has a gap between leaves {start} and {end}")
        return [bytes(row[1]) for row in rows]

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT idx, hash FROM tree_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (level, start, end),
        ).fetchall()
        if rows and (rows[0][0] != start or rows[-1][0] != start + len(rows) - 1):
            raise StorageError(f"the tree has a gap at level {level} between {start} and {end}")
        return [bytes(row[1]) for row in rows]

    def latest_checkpoint(self) -> str | None:
        row = self._db.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def checkpoint_at(self, size: int) -> str | None:
        row = self._db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return None if row is None else str(row[0])

    def wrapped_key(self, comp: bytes) -> tuple[str, bytes] | None:
        row = self._db.execute(
            "SELECT kek_id, wrapped FROM data_keys WHERE comp = ?", (comp,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def wrapped_key_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT kek_id, count(*) FROM data_keys GROUP BY kek_id")
        return {str(kek_id): int(count) for kek_id, count in rows}

    def wrapped_keys_besides(
        self, kek_id: str, after: bytes, limit: int
    ) -> list[tuple[bytes, str, bytes]]:
        rows = self._db.execute(
            "SELECT comp, kek_id, wrapped FROM data_keys WHERE kek_id <> ? AND comp > ?"
            " ORDER BY comp LIMIT ?",
            (kek_id, after, limit),
        ).fetchall()
        return [(bytes(comp), str(kek), bytes(wrapped)) for comp, kek, wrapped in rows]

    def records_of(self, comp: bytes) -> list[bytes]:
        rows = self._db.execute(
            "SELECT loc FROM versions v WHERE comp = ?"
            " AND version = (SELECT max(version) FROM versions WHERE loc = v.loc)",
            (comp,),
        ).fetchall()
        return [bytes(row[0]) for row in rows]


class _Txn(_Reader):
    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        self._depth = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._depth += 1
        name = f"s{self._depth}"
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._db.execute(f"ROLLBACK TO {name}")
            raise
        finally:
            self._db.execute(f"RELEASE {name}")
            self._depth -= 1

    def append(self, record: SealedVersion, tokens: Iterable[bytes]) -> None:
        db = self._db
        db.execute(
            "INSERT INTO versions (loc, version, kind, comp, ts, deleted, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.loc,
                record.version,
                record.kind,
                record.comp,
                record.ts,
                record.deleted,
                record.body,
            ),
        )
        db.execute(
            "INSERT OR REPLACE INTO current (loc, version, kind, deleted) VALUES (?, ?, ?, ?)",
            (record.loc, record.version, record.kind, record.deleted),
        )
        self._replace_tokens(record.loc, set(tokens))

    def _replace_tokens(self, loc: bytes, tokens: set[bytes]) -> None:
        """Leave a record with exactly ``tokens``, touching only those that change: an
        update keeps most of its tokens, and each one rewritten costs a B-tree page."""
        if not tokens:  # a deletion
            self._db.execute("DELETE FROM tokens WHERE loc = ?", (loc,))
            return
        held = set(self.tokens_of(loc))
        self._db.executemany(
            "DELETE FROM tokens WHERE token = ? AND loc = ?",
            [(token, loc) for token in held - tokens],
        )
        self._db.executemany(
            "INSERT INTO tokens (token, loc) VALUES (?, ?)",
            [(token, loc) for token in sorted(tokens - held)],
        )

    def append_leaves(self, start: int, leaves: Sequence[bytes]) -> None:
        """Add leaves from ``start``, which must be the end of the log (the caller read
        ``leaf_count`` under the same write lock); a wrong index fails, never overwrites."""
        try:
            self._db.executemany(
                "INSERT INTO leaves (idx, data) VALUES (?, ?)", enumerate(leaves, start)
            )
        except sqlite3.IntegrityError:
            raise StorageError(f"the log already has a leaf at {start} or after") from None

    def append_events(self, events: Sequence[SealedEvent]) -> None:
        self._db.executemany(
            "INSERT INTO audit_events (digest, comp, leaf, body) VALUES (?, ?, ?, ?)",
            [(event.digest, event.comp, event.leaf, event.body) for event in events],
        )

    def put_nodes(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes
        )

    def put_checkpoint(self, size: int, note: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?, ?)", (size, note)
        )

    def rewrap_key(self, comp: bytes, old: tuple[str, bytes], new: tuple[str, bytes]) -> bool:
        cursor = self._db.execute(
            "UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE comp = ? AND kek_id = ?"
            " AND wrapped = ?",
            (*new, comp, *old),
        )
        return cursor.rowcount == 1

    def put_wrapped_key(self, comp: bytes, kek_id: str, wrapped: bytes) -> tuple[str, bytes]:
        self._db.execute(
            "INSERT OR IGNORE INTO data_keys (comp, kek_id, wrapped) VALUES (?, ?, ?)",
            (comp, kek_id, wrapped),
        )
        stored = self.wrapped_key(comp)
        assert stored is not None
        return stored

    def erase_compartment(self, comp: bytes, locs: Iterable[bytes]) -> None:
        """The connection's ``secure_delete`` has SQLite overwrite the deleted rows with
        zeros, in the pages this transaction writes to the WAL."""
        rows = [(loc,) for loc in locs]
        self._db.execute("DELETE FROM data_keys WHERE comp = ?", (comp,))
        self._db.executemany("DELETE FROM tokens WHERE loc = ?", rows)
        self._db.executemany("DELETE FROM current WHERE loc = ?", rows)


class SqliteStorage(_Reader):
    """Sealed versions, index tokens and wrapped keys in one SQLite file.

    Two connections: reads see only committed data, while one write transaction at a
    time (possibly in another thread) works on the other.
    """

    def __init__(
        self, path: Path | str, *, create: bool = False, synchronous: str = "FULL"
    ) -> None:
        if not create and not Path(path).exists():
            raise StorageError(f"no storage at {path}")
        writes = self._connect(path, synchronous, create)
        writes.execute(f"PRAGMA cache_size = -{_WRITE_CACHE_KIB}")
        super().__init__(self._connect(path, synchronous, False))
        self._write_db = writes
        self._lock_file = open(f"{path}.lock", "ab")  # noqa: SIM115 - held for the storage's life
        self.path = path

    @staticmethod
    def _connect(path: Path | str, synchronous: str, create: bool) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
                cached_statements=_STATEMENT_CACHE,
            )
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            # Freed space is zeroed (Debian's default, not every build's): a row deleted,
            # or a copy of it left behind when a page is split, never lingers in the file.
            connection.execute("PRAGMA secure_delete = ON")
            if create:
                connection.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise StorageError(f"cannot open the SQLite storage at {path}: {error}") from None
        return connection

    @contextmanager
    def transaction(self) -> Iterator[_Txn]:
        # Writers of several processes queue on a file lock, which wakes the next one as
        # soon as the lock is free, instead of SQLite's busy handler, which sleeps and
        # retries (up to 100 ms a try): same order, much shorter tails.
        with self._write_lock():
            yield from self._transaction()

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def _transaction(self) -> Iterator[_Txn]:
        db = self._write_db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise StorageError(f"SQLite could not start a write: {error}") from None
        try:
            yield _Txn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as error:
            db.execute("ROLLBACK")
            raise StorageError(f"SQLite could not commit: {error}") from None

    def history(self, query: HistoryQuery) -> Sequence[SealedVersion]:
        where, args = query.where("?")
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM versions{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*args, query.limit, query.offset],
        ).fetchall()
        return [_row(row) for row in rows]

    def count_history(self, query: HistoryQuery) -> int:
        where, args = query.where("?")
        count: int = self._db.execute(f"SELECT count(*) FROM versions{where}", args).fetchone()[0]
        return count

    def last_seq(self) -> int:
        row = self._db.execute("SELECT max(seq) FROM versions").fetchone()
        return int(row[0] or 0)

    def event_count(self, before: int) -> int:
        row = self._db.execute("SELECT count(*) FROM audit_events WHERE leaf < ?", (before,))
        return int(row.fetchone()[0])

    def events_of(self, comp: bytes) -> Sequence[SealedEvent]:
        rows = self._db.execute(
            "SELECT digest, comp, leaf, body FROM audit_events WHERE comp = ? ORDER BY leaf DESC",
            (comp,),
        ).fetchall()
        return [SealedEvent(*row) for row in rows]

    def current_of_kind(self, kind: bytes) -> Iterator[SealedVersion]:
        cursor = self._db.execute(
            f"SELECT {', '.join('v.' + c for c in _COLUMNS.split(', '))} FROM current c"
            " JOIN versions v ON v.loc = c.loc AND v.version = c.version"
            " WHERE c.kind = ? AND c.deleted = 0 ORDER BY v.seq",
            (kind,),
        )
        for row in cursor:
            yield _row(row)

    def purge_erased(self) -> None:
        """Copy the WAL into the file and truncate it: its older frames may still hold
        the pages as they were before the erasure. Readers of other processes can hold
        the WAL back; StorageError then, and running it again finishes the job."""
        with self._write_lock():
            busy = self._write_db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise StorageError("SQLite's WAL is in use by a reader and could not be truncated")

    def close(self) -> None:
        self._db.close()
        self._write_db.close()
        self._lock_file.close()
