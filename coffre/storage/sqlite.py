"""The embedded storage: one SQLite file in WAL mode.

Every acknowledged write is durable: transactions commit with ``synchronous=FULL`` and a
write takes the database's write lock up front (``BEGIN IMMEDIATE``), so that versions
are numbered without races between server processes. sqlite3's errors are turned into
StorageError here and nowhere else.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

from coffre.exceptions import (
    IndexDamagedError,
    LogDamagedError,
    StorageError,
    StorageFullError,
    TransactionUndoneError,
)
from coffre.storage.base import (
    ORIGIN,
    TOKEN_BYTES,
    HistoryQuery,
    SealedEvent,
    SealedVersion,
)

# Each record's index tokens, joined in token order, under an id that sorts as its location
# (its first 8 bytes), and those ids' tokens as the terms of an FTS5 index that keeps no
# copy of them: FTS5 buffers a transaction's postings and writes them as one sorted run,
# merged with the others later, where a B-tree of (token, location) takes each token to a
# random page (a page written to the WAL per token, 17 µs a token in a large vault). The
# ``tokens`` table below holds the records of a vault written before this layout, and any
# whose id another location already has: both are read alongside (almost always empty).
_TOKEN_INDEX = (
    """CREATE VIRTUAL TABLE IF NOT EXISTS token_index USING fts5(
    terms, content='', detail='none', columnsize=0, tokenize='ascii'
)""",
    "INSERT INTO token_index (token_index, rank) VALUES ('automerge', 2)",
    "INSERT INTO token_index (token_index, rank) VALUES ('usermerge', 2)",
)
TOKEN_SETS = (
    """
CREATE TABLE IF NOT EXISTS token_sets (
    id INTEGER PRIMARY KEY,
    loc BLOB NOT NULL,
    tokens BLOB NOT NULL
);
"""
    + ";\n".join(_TOKEN_INDEX)
    + ";\n"
)
# A look-up reads each of its tokens in every run of the FTS5 index: FTS5's default merges
# runs four at a time and leaves up to three a level (14 runs after loading 300 patients,
# a look-up three times what it costs in one run). Merged two at a time, and each write
# that indexes tokens merging up to this many pages more, the index stays in a few runs.
_MERGE_PAGES = 128
_INDEX = "INSERT INTO token_index (rowid, terms) VALUES (?, ?)"
_UNINDEX = "INSERT INTO token_index (token_index, rowid, terms) VALUES ('delete', ?, ?)"
_TABLES = """
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
    leaf INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,
    comp BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_by_comp ON audit_events (comp, leaf);
CREATE TABLE IF NOT EXISTS data_keys (
    comp BLOB PRIMARY KEY,
    kek_id TEXT NOT NULL,
    wrapped BLOB NOT NULL
) WITHOUT ROWID;
"""
SCHEMA = TOKEN_SETS + _TABLES


_COLUMNS = "loc, version, kind, comp, ts, deleted, body, seq"
# Tokens a compound SELECT of ``find`` looks up at most (SQLite allows 500 branches).
_BRANCHES = 250
# Prepared statements a connection keeps: ``find`` and the batched reads have one for
# each number of tokens or locations.
_STATEMENT_CACHE = 1024
# Pages the write connection keeps in memory, in KiB (SQLite's default, which each read
# connection keeps, is 2 MiB): a write inserts each of a record's index tokens at a random
# place of the token index, and once that index outgrows the cache every insert reads its
# page back from the file. Reads keep the default so that a long export, which reads every
# page once, does not grow the server by the cache's size.
_WRITE_CACHE_KIB = 65536
MIN_FREE_BYTES = 1 << 20
"""Free space below which the storage's disk counts as full (a server is then not ready)."""


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _set_id(loc: bytes) -> int:
    """The id of a location's token set: its first 8 bytes as a signed integer, so that
    ids sort as locations do (locations are keyed hashes: two sharing 8 bytes are rare)."""
    return int.from_bytes(loc[:8].ljust(8, b"\0")) - (1 << 63)


# A token's bytes as FTS5 terms: each byte a letter of U+0100-U+01FF, which FTS5's ascii
# tokenizer keeps as they are. Hexadecimal would do, but its digits and letters make
# strings that plaintext (a code, a date) could take for its own; these no text is made of.
_TERM_LETTERS = {byte: 0x100 + byte for byte in range(256)}


def _term(token: bytes) -> str:
    return token.decode("latin-1").translate(_TERM_LETTERS)


def _split(joined: bytes) -> list[bytes]:
    return [joined[at : at + TOKEN_BYTES] for at in range(0, len(joined), TOKEN_BYTES)]


_TERM_UNITS = b"\x01\x00" * TOKEN_BYTES + b"\x00 "
"""A term and the space after it as big-endian UTF-16 units: U+01XX for each byte XX of
the token (whose low bytes are filled in), then U+0020."""


def _terms(joined: bytes) -> str:
    """Joined tokens as the FTS5 index takes them: a term each (as ``_term`` spells it),
    separated by spaces. Spelt as UTF-16 and decoded in one pass, a slice a byte of the
    token, not looked up letter by letter: six times faster for a record's ~100 tokens."""
    count, rest = divmod(len(joined), TOKEN_BYTES)
    if rest:  # never written so by Coffre: a host's edit, spelt token by token
        return " ".join(map(_term, _split(joined)))
    units = bytearray(_TERM_UNITS * count)
    for at in range(TOKEN_BYTES):
        units[2 * at + 1 :: len(_TERM_UNITS)] = joined[at::TOKEN_BYTES]
    return units[:-2].decode("utf-16-be")


def _query(tokens: Sequence[bytes]) -> str:
    """The FTS5 query that matches the rows carrying any of the tokens."""
    return " OR ".join(map(_term, tokens))


def _holds(joined: bytes, token: bytes) -> bool:
    """Whether joined tokens hold ``token`` as one of them (not across two)."""
    at = joined.find(token)
    while at >= 0 and at % TOKEN_BYTES:
        at = joined.find(token, at + 1)
    return at >= 0


def _row(row: tuple[Any, ...]) -> SealedVersion:
    return SealedVersion(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7])


class _Reader:
    """Every read, over whatever connection ``_db`` gives."""

    @property
    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

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
        if self._has_overflow():
            parts += [
                self._find_overflow(tokens[start : start + _BRANCHES], after, limit)
                for start in range(0, len(tokens), _BRANCHES)
            ]
        if len(parts) == 1:
            return parts[0]
        merged = list(dict.fromkeys(heapq.merge(*parts)))
        return merged if limit is None else merged[:limit]

    def _find_some(self, tokens: Sequence[bytes], after: bytes, limit: int | None) -> list[bytes]:
        """FTS5 reads the tokens' postings merged in id order, which is location order (a
        location sharing its id's first one with ``after`` is told apart by the join)."""
        if not tokens:
            return []
        sql = (
            "SELECT s.loc FROM token_index f JOIN token_sets s ON s.id = f.rowid"
            " WHERE token_index MATCH ? AND f.rowid >= ? AND s.loc > ? ORDER BY f.rowid"
        )
        args: list[Any] = [_query(tokens), _set_id(after), after]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with _index_statements():
            return [row[0] for row in self._db.execute(sql, args).fetchall()]

    def _find_overflow(
        self, tokens: Sequence[bytes], after: bytes, limit: int | None
    ) -> list[bytes]:
        """One SELECT a token, in a compound that SQLite merges in location order (the
        primary key's order within a token), so that the LIMIT stops it early."""
        branch = "SELECT loc FROM tokens WHERE token = ? AND loc > ?"
        sql = " UNION ".join([branch] * len(tokens)) + " ORDER BY loc"
        args: list[Any] = [value for token in tokens for value in (token, after)]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [row[0] for row in self._db.execute(sql, args).fetchall()]

    def _has_overflow(self) -> bool:
        """Whether any record keeps its tokens in the ``tokens`` table."""
        return self._db.execute("SELECT 1 FROM tokens LIMIT 1").fetchone() is not None

    def carrying(self, tokens: Sequence[bytes], locs: Sequence[bytes]) -> set[bytes]:
        if not tokens:
            return set()
        joined = self.joined_tokens(locs)
        return {loc for loc, held in joined.items() if any(_holds(held, t) for t in tokens)}

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
        return _split(self.joined_tokens([loc]).get(loc, b""))

    def joined_tokens(self, locs: Sequence[bytes]) -> dict[bytes, bytes]:
        if not locs:
            return {}
        wanted = set(locs)
        rows = self._db.execute(
            f"SELECT loc, tokens FROM token_sets WHERE id IN ({_marks(len(locs))})",
            [_set_id(loc) for loc in locs],
        )
        joined = {loc: tokens for loc, tokens in rows if loc in wanted}
        if len(joined) < len(wanted) and self._has_overflow():
            joined |= self._joined_overflow([loc for loc in locs if loc not in joined])
        return joined

    def _joined_overflow(self, locs: Sequence[bytes]) -> dict[bytes, bytes]:
        """The tokens of records kept in the ``tokens`` table, sorted here: SQLite does not
        promise group_concat's order."""
        rows = self._db.execute(
            "SELECT loc, CAST(group_concat(token, '') AS BLOB) FROM tokens"
            f" WHERE loc IN ({_marks(len(locs))}) GROUP BY loc",
            locs,
        )
        return {loc: b"".join(sorted(_split(joined))) for loc, joined in rows}

    def last_seq(self) -> int:
        row = self._db.execute("SELECT max(seq) FROM versions").fetchone()
        return int(row[0] or 0)

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
            raise LogDamagedError(f"the log has a gap between leaves {start} and {end}")
        return [bytes(row[1]) for row in rows]

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT idx, hash FROM tree_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (level, start, end),
        ).fetchall()
        if rows and (rows[0][0] != start or rows[-1][0] != start + len(rows) - 1):
            raise LogDamagedError(f"the tree has a gap at level {level} between {start} and {end}")
        return [bytes(row[1]) for row in rows]

    def latest_checkpoint(self) -> str | None:
        row = self._db.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def vault_origin(self) -> str | None:
        return self.meta(ORIGIN)

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM coffre_meta WHERE key = ?", (key,)).fetchone()
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


def _roll_back(db: sqlite3.Connection) -> None:
    """End a write that failed; SQLite may have rolled it back itself already (a full
    disk), and a second failure must not hide the first."""
    with suppress(sqlite3.Error):
        if db.in_transaction:
            db.execute("ROLLBACK")


class _Txn(_Reader):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._depth = 0
        # Changes to the FTS5 index, (token set id, its terms, whether a deletion), held
        # back until the transaction ends or searches: FTS5 writes out what it holds
        # pending at every savepoint, a segment for each request of a group commit (a
        # fifth of the requests' time under the lock). Those before ``_index_written``
        # are written.
        self._index_changes: list[tuple[int, str, bool]] = []
        self._index_written = 0
        # The log's length, read once under the write lock, then followed as leaves are
        # appended: a request asks for it twice (its events, its leaves).
        self._leaf_count: int | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        return self._connection

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._depth += 1
        name = f"s{self._depth}"
        changes, written = len(self._index_changes), self._index_written
        leaf_count = self._leaf_count
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException as error:
            # What was written since is undone, changes made before the savepoint included;
            # the counts first, so that they are right even if the rollback fails too.
            del self._index_changes[changes:]
            self._index_written = written
            self._leaf_count = leaf_count
            if not self._db.in_transaction:
                # SQLite undid the whole transaction itself (a full disk): the savepoints of
                # the requests before this one are gone too, and a next one would begin a
                # transaction of its own, committed at its release, outside the lock's.
                raise _undone(error) from None
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
            if isinstance(error, sqlite3.Error):  # SQLite undid the statement only
                raise _failure("SQLite could not write", error) from None
            raise
        else:
            self._db.execute(f"RELEASE {name}")
        finally:
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
        self._replace_tokens(record.loc, b"".join(sorted(set(tokens))))

    def _replace_tokens(self, loc: bytes, joined: bytes) -> None:
        """Leave a record with exactly the ``joined`` tokens (none: a deletion), in its
        token set, or in the ``tokens`` table when another location has its set's id."""
        if len(joined) % TOKEN_BYTES:
            raise ValueError(f"index tokens are {TOKEN_BYTES} bytes long")
        db, set_id = self._db, _set_id(loc)
        held = db.execute("SELECT loc, tokens FROM token_sets WHERE id = ?", (set_id,)).fetchone()
        if held is not None and held[0] == loc:
            if held[1] == joined:
                return
            self._unindex(set_id, held[1])
            db.execute("DELETE FROM token_sets WHERE id = ?", (set_id,))
            held = None
        elif self._has_overflow():
            db.execute("DELETE FROM tokens WHERE loc = ?", (loc,))
        if not joined:
            return
        if held is None:
            db.execute(
                "INSERT INTO token_sets (id, loc, tokens) VALUES (?, ?, ?)", (set_id, loc, joined)
            )
            self._index_changes.append((set_id, _terms(joined), False))
        else:
            db.executemany(
                "INSERT INTO tokens (token, loc) VALUES (?, ?)",
                [(token, loc) for token in _split(joined)],
            )

    def _unindex(self, set_id: int, joined: bytes) -> None:
        """Take a token set out of the FTS5 index, which needs the very terms it was given."""
        self._index_changes.append((set_id, _terms(joined), True))

    def write_index(self) -> None:
        """Write the changes to the FTS5 index held back, in the order they were made."""
        for set_id, terms, deletion in self._index_changes[self._index_written :]:
            self._db.execute(_UNINDEX if deletion else _INDEX, (set_id, terms))
        self._index_written = len(self._index_changes)

    def find(
        self, tokens: Sequence[bytes], after: bytes = b"", limit: int | None = None
    ) -> list[bytes]:
        with _index_statements():
            self.write_index()  # a search sees the transaction's own writes
        return super().find(tokens, after, limit)

    @property
    def changes_index(self) -> bool:
        return bool(self._index_changes)

    def merge_index(self) -> None:
        """Write the index's changes, then some of its merging, if this transaction
        changed it."""
        self.write_index()
        if self.changes_index:
            self._db.execute(
                "INSERT INTO token_index (token_index, rank) VALUES ('merge', ?)", (_MERGE_PAGES,)
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
        if leaves:
            self._leaf_count = start + len(leaves)

    def leaf_count(self) -> int:
        if self._leaf_count is None:
            self._leaf_count = super().leaf_count()
        return self._leaf_count

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

    def put_meta(self, key: str, value: str) -> str:
        self._db.execute(
            "INSERT OR IGNORE INTO coffre_meta (key, value) VALUES (?, ?)", (key, value)
        )
        stored = self.meta(key)
        assert stored is not None
        return stored

    def erase_compartment(self, comp: bytes, locs: Iterable[bytes]) -> None:
        """The connection's ``secure_delete`` has SQLite overwrite the deleted rows with
        zeros, in the pages this transaction writes to the WAL; the FTS5 index only marks
        the token sets deleted, until ``purge_erased`` rewrites it."""
        rows = [(loc,) for loc in locs]
        self._db.execute("DELETE FROM data_keys WHERE comp = ?", (comp,))
        for (loc,) in rows:
            self._replace_tokens(loc, b"")
        self._db.executemany("DELETE FROM current WHERE loc = ?", rows)


def create_private(path: Path | str) -> None:
    """Create the storage's file readable by its owner alone, unless it exists: SQLite
    would create it as the umask allows (often readable by all), and its WAL and shared
    memory files take the database file's permissions. Ciphertext, but the host's accounts
    have no business reading it. Never opened when it exists: closing a descriptor of a
    file drops every POSIX lock the process holds on it, its SQLite connections' too."""
    try:
        with suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise StorageError(f"cannot open the SQLite storage at {path}: {error}") from None


def holds_storage(path: Path) -> bool:
    """Whether the SQLite file holds a Coffre storage (its coffre_meta table), read without
    writing anything to it, not even a journal mode: not an empty file, nor another
    application's database."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            meta = db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'coffre_meta'").fetchone()
    except sqlite3.Error as error:
        raise StorageError(f"cannot open the SQLite storage at {path}: {error}") from None
    return meta is not None


def add_token_sets(connection: sqlite3.Connection, path: Path | str) -> None:
    """Give a new storage, or a vault written before token sets, their (empty) tables;
    nothing to write, and no lock to wait for, in any other."""
    try:
        if connection.execute("SELECT 1 FROM sqlite_schema WHERE name = 'token_index'").fetchone():
            return
        connection.executescript(TOKEN_SETS)
    except sqlite3.Error as error:
        raise StorageError(
            f"cannot add token sets to the SQLite storage at {path}: {error}"
        ) from None


def put_token_sets(connection: sqlite3.Connection, rows: Iterable[tuple[bytes, bytes]]) -> None:
    """Give records their tokens, each as (location, tokens joined in token order), in the
    transaction under way on ``connection`` (a copy's)."""
    txn = _Txn(connection)
    for loc, joined in rows:
        txn._replace_tokens(loc, joined)
    txn.write_index()


class _ThreadConnections:
    """A read connection for each thread that reads. Statements of two threads on one
    connection would share a read transaction, the one that began first: a read of the
    requests' thread made while an export's thread runs a query would see the storage as
    it was when that query began, older than a write the client was just told of."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._mutex = threading.Lock()
        self._of_thread: dict[threading.Thread, sqlite3.Connection] = {}
        self.get()  # the opening thread's, and any error opening it, at once

    def get(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
            with self._mutex:
                self._close_those_of_ended_threads()
                self._of_thread[threading.current_thread()] = connection
        return connection

    def _close_those_of_ended_threads(self) -> None:
        for thread in [thread for thread in self._of_thread if not thread.is_alive()]:
            self._of_thread.pop(thread).close()

    def close(self) -> None:
        with self._mutex:
            for connection in self._of_thread.values():
                connection.close()
            self._of_thread.clear()


class SqliteStorage(_Reader):
    """Sealed versions, index tokens and wrapped keys in one SQLite file.

    Reads see only committed data, each thread on a connection of its own, while one
    write transaction at a time (possibly in another thread) works on the write one.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        create: bool = False,
        synchronous: str = "FULL",
        origin: str | None = None,
    ) -> None:
        """``create``: make the tables where missing; ``origin``: with it, the vault's log's
        name, recorded in a new storage."""
        if create:
            create_private(path)
        elif not Path(path).exists():
            raise StorageError(f"no storage at {path}")
        # The token index is left alone where it exists: a statement on it would fail to
        # open a storage whose index the host damaged, which ``rebuild_index`` repairs.
        writes = self._connect(path, synchronous, _TABLES if create else None)
        add_token_sets(writes, path)
        if create and origin is not None:
            writes.execute("INSERT INTO coffre_meta (key, value) VALUES (?, ?)", (ORIGIN, origin))
        writes.execute(f"PRAGMA cache_size = -{_WRITE_CACHE_KIB}")
        # The journal of each savepoint (one a request in a group commit) in memory: by
        # default SQLite spills it to a temporary file in /var/tmp, made and unlinked a
        # few times a transaction.
        writes.execute("PRAGMA temp_store = MEMORY")
        self._readers = _ThreadConnections(lambda: self._connect(path, synchronous, None))
        self._write_db = writes
        self._writing = threading.Lock()
        self._lock_file = open(f"{path}.lock", "ab")  # noqa: SIM115 - held for the storage's life
        self.path = path
        self._files = _identities(path)

    @property
    def _db(self) -> sqlite3.Connection:
        return self._readers.get()

    @staticmethod
    def _connect(path: Path | str, synchronous: str, schema: str | None) -> sqlite3.Connection:
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
            if schema is not None:
                connection.executescript(schema)
        except sqlite3.Error as error:
            raise StorageError(f"cannot open the SQLite storage at {path}: {error}") from None
        return connection

    @contextmanager
    def transaction(self) -> Iterator[_Txn]:
        # Writers of several processes queue on a file lock, which wakes the next one as
        # soon as the lock is free, instead of SQLite's busy handler, which sleeps and
        # retries (up to 100 ms a try): same order, much shorter tails.
        # And one at a time in this process: the group commit's thread, the index's upkeep.
        with self._writing, self._write_lock():
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
        self._check_files()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise StorageError(f"SQLite could not start a write: {error}") from None
        txn = _Txn(db)
        try:
            yield txn
        except sqlite3.Error as error:  # the disk full, the file gone read-only...
            _roll_back(db)
            raise _failure("SQLite could not write", error) from None
        except BaseException:
            _roll_back(db)
            raise
        try:
            txn.merge_index()
            db.execute("COMMIT")
        except sqlite3.Error as error:
            _roll_back(db)
            if txn.changes_index and _is_index_damage(error):  # FTS5 writes at the commit
                raise _damaged(error) from None
            raise _failure("SQLite could not commit", error) from None

    def consolidate_index(self, pages: int) -> bool:
        """Merge the FTS5 index's runs toward one, ``pages`` pages at most. The merges each
        write makes keep about one run a level (seven after loading 200 patients), and a
        look-up reads its tokens in every run: in one, a search costs some 15% less CPU.
        FTS5's 'merge' with a negative count puts every run on one level and merges them
        by steps, as 'optimize' does at once; a write between steps joins the merge."""
        with self.transaction(), _index_statements():
            before = self._write_db.total_changes
            self._write_db.execute(
                "INSERT INTO token_index (token_index, rank) VALUES ('merge', ?)", (-pages,)
            )
            return self._write_db.total_changes - before >= 2

    def rebuild_index(self) -> None:
        """The FTS5 index made anew from the token sets, in one write transaction. FTS5
        can neither rebuild a contentless index nor drop one whose structure it cannot
        read: its tables are first given the rows of a new, empty index."""
        with self.transaction():
            db = self._write_db
            _reset_index_tables(db)
            db.execute("DROP TABLE token_index")
            for statement in _TOKEN_INDEX:
                db.execute(statement)
            rows = db.execute("SELECT id, tokens FROM token_sets")
            db.executemany(_INDEX, ((set_id, _terms(joined)) for set_id, joined in rows))

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
        """Rewrite the FTS5 index as one run, without the postings of deleted token sets
        (its older runs keep them, marked deleted, until merged); then copy the WAL into
        the file and truncate it: its older frames may still hold the pages as they were
        before the erasure. Readers of other processes can hold the WAL back; StorageError
        then, and running it again finishes the job."""
        with self._write_lock():
            self._write_db.execute("INSERT INTO token_index (token_index) VALUES ('optimize')")
            busy = self._write_db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise StorageError("SQLite's WAL is in use by a reader and could not be truncated")

    def _check_files(self) -> None:
        """Refuse to write once the storage file or its WAL is no longer the one opened
        (deleted, moved or replaced while serving): SQLite would go on writing to the old
        files, and what it acknowledged would be lost with them."""
        if _identities(self.path) != self._files:
            raise StorageError(
                f"the SQLite storage {self.path} or its -wal file was deleted, moved or"
                " replaced while this server had it open: it takes no more writes. Stop"
                " every server of this vault with a signal they can finish on (never kill"
                " -9): the last to close writes what its open WAL holds back into the file"
                " it opened; put that file back in place before starting again"
            )

    def check_writable(self) -> None:
        self._check_files()
        disk = os.statvfs(Path(self.path).parent)
        if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
            raise StorageFullError(
                f"the disk holding {self.path} is full: nothing can be served, since every"
                " read is logged; free some space"
            )
        for path in (Path(self.path), Path(self.path).parent):  # the folder: WAL, journal
            if not os.access(path, os.W_OK):
                raise StorageError(
                    f"the SQLite storage takes no writes ({path} is read-only): nothing can"
                    " be served, since every read is logged"
                )

    def close(self) -> None:
        self._readers.close()
        self._write_db.close()
        self._lock_file.close()


def _identities(path: Path | str) -> tuple[tuple[int, int] | None, ...]:
    """The storage file's and its WAL's identity (device, inode; None: missing)."""
    found: list[tuple[int, int] | None] = []
    for name in (str(path), f"{path}-wal"):
        try:
            status = os.stat(name)
        except FileNotFoundError:
            found.append(None)
        else:
            found.append((status.st_dev, status.st_ino))
    return tuple(found)


def _is_full(error: BaseException) -> bool:
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _is_index_damage(error: sqlite3.Error) -> bool:
    """Whether an error of a statement on the FTS5 index (or of the commit that writes its
    changes) says that its tables are not as FTS5 left them: its structure record zeroed
    ('constraint failed': a segment written where one is), garbled or deleted ('vtable
    constructor failed'), its configuration or the table gone (SQLITE_ERROR). No other
    table Coffre writes has a constraint checked at the commit."""
    code = getattr(error, "sqlite_errorcode", sqlite3.SQLITE_OK)
    primary = code & 0xFF
    return code == sqlite3.SQLITE_CORRUPT_VTAB or primary in _INDEX_DAMAGE


_INDEX_DAMAGE = frozenset({sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_ERROR})


def _damaged(error: sqlite3.Error) -> IndexDamagedError:
    return IndexDamagedError(f"SQLite's FTS5 index: {error}")


@contextmanager
def _index_statements() -> Iterator[None]:
    """Statements on the FTS5 index: an error that only a damaged index explains raised
    as IndexDamagedError, others as they are."""
    try:
        yield
    except sqlite3.Error as error:
        if _is_index_damage(error):
            raise _damaged(error) from None
        raise


def _reset_index_tables(db: sqlite3.Connection) -> None:
    """Give the FTS5 index's own tables (those missing made again) the rows of a new,
    empty index, made in memory with the same statements, whatever the host did to them."""
    new = sqlite3.connect(":memory:")
    try:
        for statement in _TOKEN_INDEX:
            new.execute(statement)
        tables = new.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND name GLOB 'token_index_*'"
        ).fetchall()
        for name, sql in tables:
            db.execute(f"DROP TABLE IF EXISTS {name}")
            db.execute(sql)
            rows = new.execute(f"SELECT * FROM {name}").fetchall()
            if rows:
                db.executemany(f"INSERT INTO {name} VALUES ({_marks(len(rows[0]))})", rows)
    finally:
        new.close()


def _failure(what: str, error: sqlite3.Error) -> StorageError:
    """A failed write as Coffre tells it: a full disk apart, for the client's advice."""
    return (StorageFullError if _is_full(error) else StorageError)(f"{what}: {error}")


def _undone(error: BaseException) -> StorageError:
    """The failure that made SQLite undo a whole transaction, for every request of it (its
    own message only: another error's may quote a record)."""
    if _is_full(error):
        return StorageFullError(f"SQLite undid the whole transaction: {error}")
    cause = error if isinstance(error, sqlite3.Error) else type(error).__name__
    return TransactionUndoneError(f"SQLite undid the whole transaction after {cause}")
