"""Copying a storage to another backend as the host holds it: rows of opaque bytes, never
decrypted, so that no key is needed (``coffre migrate``, ``coffre backup``, ``coffre restore``).

Every table is read in the order of a unique key, in batches, from ONE read snapshot of
the source (SQLite's read transaction, PostgreSQL's REPEATABLE READ): the copy is the
source's state at the moment the copy started, whatever is written meanwhile. Each batch
lands in the destination in a transaction of its own, in key order, so an interrupted
copy leaves each table holding a prefix of the source's; the next run checks that the
destination is such a prefix and carries on after its last key. Until the copy is proven,
the destination carries a mark (``UNFINISHED_COPY`` in its coffre_meta, which the copy
itself never reads nor compares), so that no vault opens on what is only part of one.

The proof that the two sides hold the same content: per table, the count of rows and a
SHA-256 over the rows in key order, computed on the source from the snapshot while it is
copied and on the destination by reading it back afterwards; the caller can fold the
log's leaves on both sides into their tree root too (``LeafFold``).
"""

from __future__ import annotations

import hashlib
import marshal
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat

from coffre.exceptions import StorageError
from coffre.storage import postgres, sqlite
from coffre.storage.base import TOKEN_BYTES, UNFINISHED_COPY

Row = tuple[Any, ...]
DEFAULT_BATCH = 50_000
"""Rows per read and per destination transaction: each commit costs the destination a
flush to disk and a COPY or a statement to start, which 5,000-row batches made a quarter
of PostgreSQL's work; 50,000 rows of index tokens are about 2 MB."""
MARSHAL_VERSION = 2
LIST_HEADER = len(marshal.dumps([], MARSHAL_VERSION))
"""The bytes that start a list in marshal's format: its type and its length."""
INDEX = re.compile(r"CREATE INDEX IF NOT EXISTS (\w+)")
CACHE_KIB = 256 * 1024
"""SQLite's page cache while copying: the index of a large table fits."""
ROWS_PER_INSERT = 500
"""Rows an SQLite INSERT statement carries: one statement per row costs sqlite3's
``executemany`` more than SQLite's own work (about twice as much for index tokens)."""


@dataclass(frozen=True, slots=True)
class Table:
    """A table as both drivers hold it: its columns, and the unique key it is copied in."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    integers: frozenset[str] = frozenset()
    """The columns of integers (booleans included); the others hold bytes or texts."""

    def key_of(self, row: Row) -> Row:
        return tuple(row[self.columns.index(column)] for column in self.key)

    def data_bytes(self, rows: Sequence[Row]) -> int:
        """The bytes of data that rows carry (their byte strings and texts)."""
        measured = [i for i, column in enumerate(self.columns) if column not in self.integers]
        try:
            return sum(sum(map(len, map(itemgetter(i), rows))) for i in measured)
        except TypeError:  # an SQLite value that is not of its column's type
            return sum(len(v) for row in rows for v in row if isinstance(v, bytes | str))


TABLES = (
    Table("coffre_meta", ("key", "value"), ("key",)),
    Table(
        "versions",
        ("seq", "loc", "version", "kind", "comp", "ts", "deleted", "body"),
        ("seq",),
        frozenset({"seq", "version", "ts", "deleted"}),
    ),
    Table(
        "current",
        ("loc", "version", "kind", "comp", "deleted"),
        ("loc",),
        frozenset({"version", "deleted"}),
    ),
    Table("token_sets", ("loc", "tokens"), ("loc",)),
    Table("leaves", ("idx", "data"), ("idx",), frozenset({"idx"})),
    Table("tree_nodes", ("level", "idx", "hash"), ("level", "idx"), frozenset({"level", "idx"})),
    Table("checkpoints", ("size", "note"), ("size",), frozenset({"size"})),
    Table("audit_events", ("digest", "comp", "leaf", "body"), ("leaf",), frozenset({"leaf"})),
    Table("data_keys", ("comp", "kek_id", "wrapped"), ("comp",)),
)
"""Every table, ``versions`` before ``current`` (SQLite's ``current`` takes its ``comp``
from the version it points to). ``token_sets`` is each record's index tokens, joined in
token order: what both drivers keep in layouts of their own (see ``_source``)."""

TOKEN_ROWS = Table("tokens", ("token", "loc"), ("token", "loc"))
"""PostgreSQL's table of tokens, a row each, which its ``token_sets`` joins."""

SQLITE_DERIVED = {
    (
        "current",
        "comp",
    ): "(SELECT v.comp FROM versions v WHERE v.loc = t.loc AND v.version = t.version)"
}
"""Columns PostgreSQL stores that SQLite derives: read through these expressions, never written."""


class LeafFold(Protocol):
    """What the caller computes over the log's leaves, in index order (its tree root)."""

    def add(self, data: bytes) -> None: ...

    def result(self) -> bytes: ...


@dataclass
class Summary:
    """The count of a table's rows and the SHA-256 of their encoding in key order.

    Both sides encode the same rows the same way: the endpoints read bytes as ``bytes``,
    integers and booleans as ``int``, texts as ``str``.
    """

    rows: int = 0
    _hash: Any = field(default_factory=hashlib.sha256, repr=False)

    def add(self, rows: Sequence[Row]) -> None:
        self.rows += len(rows)
        # marshal's format 2 (no back-references, so equal rows encode alike whatever
        # objects hold them): each value typed and length-prefixed, in C. The list in one
        # call, less its header, is the rows' encodings one after the other, so that the
        # digest does not depend on how the rows are batched.
        encoded = marshal.dumps(list(rows), MARSHAL_VERSION)
        self._hash.update(memoryview(encoded)[LIST_HEADER:])

    @property
    def digest(self) -> str:
        return str(self._hash.hexdigest())


@dataclass
class Side:
    """What one side of a copy holds: a summary per table, and the fold of its leaves."""

    tables: dict[str, Summary]
    leaves: LeafFold | None


@dataclass(frozen=True, slots=True)
class CopyReport:
    source: Side
    destination: Side
    resumed: dict[str, int]
    """Rows the destination already held, per table, when this run started."""

    @property
    def mismatched(self) -> list[str]:
        """The tables whose count or digest differ, and "log root" if the folds differ."""
        wrong = [
            t.name
            for t in TABLES
            if (self.source.tables[t.name].rows, self.source.tables[t.name].digest)
            != (self.destination.tables[t.name].rows, self.destination.tables[t.name].digest)
        ]
        source, destination = self.source.leaves, self.destination.leaves
        if (
            source is not None
            and destination is not None
            and source.result() != destination.result()
        ):
            wrong.append("log root")
        return wrong


class Progress(Protocol):
    def start(self, rows: int) -> None: ...

    def advance(self, rows: int, data_bytes: int) -> None:
        """``rows`` of the source went by; ``data_bytes`` of them were written."""
        ...


class Endpoint:
    """One side of a copy, over SQL that SQLite and PostgreSQL both speak; the drivers'
    differences (placeholders, snapshots, bulk writes) are in the subclasses."""

    PLACEHOLDER = "?"
    location: str
    """The storage, as a copy's mark names it."""

    def tables(self) -> dict[str, set[str]]:
        """The tables this storage holds and their columns."""
        raise NotImplementedError

    def snapshot(self) -> AbstractContextManager[None]:
        """Reads inside see one moment of the storage."""
        raise NotImplementedError

    def _query(self, statement: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def _stream(self, statement: str, args: Sequence[Any], size: int) -> Iterator[list[Row]]:
        raise NotImplementedError

    def insert(self, table: Table, rows: Sequence[Row]) -> None:
        """Add rows in one transaction of their own."""
        raise NotImplementedError

    def _schema(self) -> list[str]:
        """The driver's statements that make its tables and indexes if they are missing."""
        raise NotImplementedError

    def _run(self, statements: Sequence[str]) -> None:
        """Statements that change the schema, in one transaction."""
        raise NotImplementedError

    def _literal(self, text: str) -> str:
        """``text`` as an SQL string literal of the driver."""
        raise NotImplementedError

    def mark_unfinished(self, source: str, *, schema: bool = False) -> None:
        """Mark this storage as an unfinished copy of ``source``, given the tables first
        in the same transaction (``schema``): no moment when it holds rows, or the
        tables, without the mark."""
        mark = (
            f"INSERT INTO coffre_meta (key, value) VALUES ('{UNFINISHED_COPY}',"
            f" {self._literal(source)}) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self._run([*(self._schema() if schema else ()), mark])

    def clear_unfinished(self) -> None:
        """The copy is proven: the storage may open as a vault's."""
        self._run([f"DELETE FROM coffre_meta WHERE key = '{UNFINISHED_COPY}'"])

    def unfinished_copy(self) -> str | None:
        """The storage this one is an unfinished copy of, or None."""
        rows = self._query(
            f"SELECT value FROM coffre_meta WHERE key = {self.PLACEHOLDER}", (UNFINISHED_COPY,)
        )
        return str(rows[0][0]) if rows else None

    def set_indexes_aside(self) -> None:
        """Drop the secondary indexes (never a key): ``finish`` builds each in one pass,
        for far less than keeping it up row by row."""
        indexes = INDEX.findall("\n".join(self._schema()))
        self._run([f"DROP INDEX IF EXISTS {name}" for name in indexes])

    def finish(self) -> None:
        """Once every row is in: the indexes back."""
        self._run(self._schema())

    def close(self) -> None:
        raise NotImplementedError

    def is_storage_of(self, other: Endpoint) -> bool:
        """Whether ``other`` is this very storage, however its location is written (the
        copy would drop the live storage's indexes, under its own read snapshot's lock)."""
        return False

    def _order(self, table: Table, column: str) -> str:
        """The expression a key column sorts by."""
        return f"t.{column}"

    def _source(self, table: Table) -> str:
        """What a table's rows are read from: the table, or a query over the driver's own;
        coffre_meta without the mark of an unfinished copy, which is no content."""
        if table.name == "coffre_meta":
            return f"(SELECT key, value FROM coffre_meta WHERE key <> '{UNFINISHED_COPY}')"
        return table.name

    def _select(self, table: Table) -> str:
        return f"SELECT {', '.join(f't.{c}' for c in table.columns)} FROM {self._source(table)} t"

    def _after(self, table: Table, op: str) -> str:
        keys = ", ".join(self._order(table, column) for column in table.key)
        marks = ", ".join(self.PLACEHOLDER for _ in table.key)
        return f"({keys}) {op} ({marks})"

    def _by_key(self, table: Table, descending: bool = False) -> str:
        direction = " DESC" if descending else ""
        return " ORDER BY " + ", ".join(self._order(table, c) + direction for c in table.key)

    def check_schema(self) -> None:
        """Refuse a storage with a table or a column this copy does not know: it would be
        left behind."""
        known = {table.name: table for table in TABLES}
        for name, columns in self.tables().items():
            if name not in known:
                raise StorageError(f"the storage has a table that the copy does not know: {name}")
            unknown = columns - set(known[name].columns)
            if unknown:
                raise StorageError(
                    f"the copy does not know the columns {sorted(unknown)} of {name}"
                )
        missing = sorted(set(known) - set(self.tables()))
        if missing:
            raise StorageError(f"the storage lacks the tables {missing}")

    def kek_ids(self) -> set[str]:
        """The key-encryption keys this storage's data keys are wrapped by."""
        self.check_schema()
        return {str(kek_id) for (kek_id,) in self._query("SELECT DISTINCT kek_id FROM data_keys")}

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint note this storage holds, unchecked."""
        self.check_schema()
        rows = self._query("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return str(rows[0][0]) if rows else None

    def count(self, table: Table) -> int:
        return int(self._query(f"SELECT count(*) FROM {self._source(table)} t")[0][0])

    def count_upto(self, table: Table, key: Row) -> int:
        where = self._after(table, "<=")
        statement = f"SELECT count(*) FROM {self._source(table)} t WHERE {where}"
        return int(self._query(statement, key)[0][0])

    def last_key(self, table: Table) -> Row | None:
        rows = self._query(self._select(table) + self._by_key(table, descending=True) + " LIMIT 1")
        return table.key_of(rows[0]) if rows else None

    def row_at(self, table: Table, key: Row) -> Row | None:
        rows = self._query(f"{self._select(table)} WHERE {self._after(table, '=')}", key)
        return rows[0] if rows else None

    def batches(self, table: Table, size: int) -> Iterator[list[Row]]:
        """Every row of a table in key order, ``size`` at a time."""
        return self._stream(self._select(table) + self._by_key(table), (), size)


def _refuse_foreign(path: Path) -> None:
    """A source is read as it is: a file that is no Coffre storage (an empty file, another
    application's database) is refused before anything, even a journal mode, is written."""
    if not sqlite.holds_storage(path):
        raise StorageError(f"{path} is not a Coffre storage: it holds no coffre_meta table")


class SqliteEndpoint(Endpoint):
    """An SQLite file: as the destination of a copy of ``copy_of``, created if absent and
    given the schema, marked as that unfinished copy if it had none. Reads and writes go
    through connections of their own, so that a read snapshot can be taken while the
    indexes are being built."""

    def __init__(self, path: Path, *, copy_of: str | None = None) -> None:
        if not path.exists() and copy_of is None:
            raise StorageError(f"no storage at {path}")
        if copy_of is None:
            _refuse_foreign(path)
        self.path = path
        self.location = str(path)
        if copy_of is not None:
            sqlite.create_private(path)
        self._db = self._connect(path)
        self._reader = self._connect(path)
        if copy_of is None:
            sqlite.add_token_sets(self._db, path)
        elif self._query("SELECT 1 FROM sqlite_schema WHERE name = 'coffre_meta'"):
            self._run(self._schema())
        else:
            self.mark_unfinished(copy_of, schema=True)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            # A copy survives its process being killed at any point; a power cut may lose
            # its last batches, which the next run copies again.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        except sqlite3.Error as error:
            raise StorageError(f"cannot open the SQLite storage at {path}: {error}") from None
        return db

    def _source(self, table: Table) -> str:
        """A record's tokens are in its token set, or in the ``tokens`` table (see
        coffre.storage.sqlite), joined there in token order."""
        if table.name != "token_sets":
            return super()._source(table)
        return (
            "(SELECT loc, tokens FROM token_sets UNION ALL"
            " SELECT loc, CAST(group_concat(token, '') AS BLOB) AS tokens"
            " FROM (SELECT loc, token FROM tokens ORDER BY loc, token) GROUP BY loc)"
        )

    def _select(self, table: Table) -> str:
        columns = (SQLITE_DERIVED.get((table.name, c), f"t.{c}") for c in table.columns)
        return f"SELECT {', '.join(columns)} FROM {self._source(table)} t"

    def tables(self) -> dict[str, set[str]]:
        """The tables as the copy sees them: ``token_sets`` standing for the three tables
        (and the FTS5 index's own) that hold the tokens."""
        names = self._query(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name <> 'tokens' AND name NOT LIKE 'token_index%'"
        )
        found = {
            name: {row[1] for row in self._query(f"PRAGMA table_info({name})")} for (name,) in names
        }
        for table, column in SQLITE_DERIVED:
            found.get(table, set()).add(column)
        found.get("token_sets", set()).discard("id")
        return found

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        self._reader.execute("BEGIN")
        self._query("SELECT count(*) FROM sqlite_schema")  # the snapshot starts here
        try:
            yield
        finally:
            with suppress(sqlite3.Error):  # a read's end: what stopped it is what to tell
                self._reader.execute("COMMIT")

    def _query(self, statement: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return self._reader.execute(statement, args).fetchall()
        except sqlite3.Error as error:
            raise StorageError(f"SQLite read failed: {error}") from None

    def _stream(self, statement: str, args: Sequence[Any], size: int) -> Iterator[list[Row]]:
        try:
            cursor = self._reader.execute(statement, args)
            while rows := cursor.fetchmany(size):
                yield rows
        except sqlite3.Error as error:
            raise StorageError(f"SQLite read failed: {error}") from None

    def _schema(self) -> list[str]:
        return [sqlite.SCHEMA]

    def _run(self, statements: Sequence[str]) -> None:
        try:
            self._db.executescript(";\n".join(["BEGIN IMMEDIATE", *statements, "COMMIT"]))
        except sqlite3.Error as error:
            raise StorageError(f"SQLite could not change the schema: {error}") from None

    def _literal(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def insert(self, table: Table, rows: Sequence[Row]) -> None:
        if table.name == "token_sets":
            self._write(table, lambda: sqlite.put_token_sets(self._db, rows))
            return
        stored = [i for i, c in enumerate(table.columns) if (table.name, c) not in SQLITE_DERIVED]
        values = (
            rows if len(stored) == len(table.columns) else [[r[i] for i in stored] for r in rows]
        )
        insert = f"INSERT INTO {table.name} ({', '.join(table.columns[i] for i in stored)}) VALUES "
        marks = f"({', '.join('?' for _ in stored)})"
        per = min(ROWS_PER_INSERT, max(1, len(values)))
        whole = len(values) - len(values) % per
        flat = list(chain.from_iterable(values[:whole]))
        width = per * len(stored)

        def write() -> None:
            self._db.executemany(
                insert + ", ".join(repeat(marks, per)),
                (flat[i : i + width] for i in range(0, len(flat), width)),
            )
            self._db.executemany(insert + marks, values[whole:])

        self._write(table, write)

    def _write(self, table: Table, work: Callable[[], None]) -> None:
        """``work`` in a transaction of its own."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                work()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            raise StorageError(f"SQLite could not write {table.name}: {error}") from None

    def close(self) -> None:
        self._reader.close()
        self._db.close()

    def is_storage_of(self, other: Endpoint) -> bool:
        return isinstance(other, SqliteEndpoint) and self.path.samefile(other.path)


class PostgresEndpoint(Endpoint):
    """A PostgreSQL database (the schema its URL's search path names): as the destination
    of a copy of ``copy_of``, given the schema if it holds none, and marked as that
    unfinished copy. Writes go through COPY, one transaction a batch."""

    PLACEHOLDER = "%s"

    def __init__(self, url: str, *, copy_of: str | None = None) -> None:
        postgres.check_url(url)
        self.location = url
        self._read = postgres._connect(url)
        self._write = postgres._connect(url)
        try:
            if copy_of is not None and not self._query("SELECT to_regclass('versions')")[0][0]:
                postgres.check_room(url)  # a role that may not create tables: what to grant
                self.mark_unfinished(copy_of, schema=True)
            # bytea's default dumper by type is the DB-API's Binary one, in Python; the
            # C one for bytes makes COPY several times faster.
            self._write.adapters.register_dumper(
                bytes, psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)
            )
            self._types = {
                (table, column): kind
                for table, column, kind in self._query(
                    "SELECT table_name, column_name, udt_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema()"
                )
            }
        except psycopg.Error as error:
            self.close()
            postgres._fail("prepare the copy", error)
        except BaseException:
            self.close()
            raise

    def _source(self, table: Table) -> str:
        """A record's tokens are rows of the ``tokens`` table, joined here in token order."""
        if table.name != "token_sets":
            return super()._source(table)
        return (
            "(SELECT loc, string_agg(token, ''::bytea ORDER BY token) AS tokens"
            " FROM tokens GROUP BY loc)"
        )

    def _select(self, table: Table) -> str:
        """Booleans read as 0 and 1, as SQLite holds them."""
        columns = (
            f"t.{c}::int" if self._types.get((table.name, c)) == "bool" else f"t.{c}"
            for c in table.columns
        )
        return f"SELECT {', '.join(columns)} FROM {self._source(table)} t"

    def _order(self, table: Table, column: str) -> str:
        """Keys compare byte by byte on both sides: texts in the "C" collation."""
        collate = ' COLLATE "C"' if self._types.get((table.name, column)) == "text" else ""
        return f"t.{column}{collate}"

    def tables(self) -> dict[str, set[str]]:
        """The tables as the copy sees them: ``tokens`` as ``token_sets``."""
        found: dict[str, set[str]] = {}
        for table, column in self._types:
            found.setdefault(table, set()).add(column)
        if "tokens" in found:
            found["token_sets"] = {"loc", "tokens"} | (found.pop("tokens") - {"token", "loc"})
        return found

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        try:
            self._read.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except psycopg.Error as error:
            postgres._fail("start a read snapshot", error)
        try:
            yield
        finally:
            self._read.execute("COMMIT")

    def _query(self, statement: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            return self._read.execute(statement, args, binary=True).fetchall()
        except psycopg.Error as error:
            postgres._fail("read", error)

    def _stream(self, statement: str, args: Sequence[Any], size: int) -> Iterator[list[Row]]:
        """Through a server-side cursor: inside ``snapshot``, which is a transaction."""
        try:
            with self._read.cursor(name="coffre_copy", binary=True) as cursor:
                cursor.execute(statement, args)
                while rows := cursor.fetchmany(size):
                    yield rows
        except psycopg.Error as error:
            postgres._fail("read", error)

    def insert(self, table: Table, rows: Sequence[Row]) -> None:
        if table.name == "token_sets":
            table, rows = (
                TOKEN_ROWS,
                [
                    (joined[at : at + TOKEN_BYTES], loc)
                    for loc, joined in rows
                    for at in range(0, len(joined), TOKEN_BYTES)
                ],
            )
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, table.columns))
        )
        try:
            with (
                self._write.transaction(),
                self._write.cursor() as cursor,
                cursor.copy(statement) as stream,
            ):
                stream.set_types([self._types[(table.name, c)] for c in table.columns])
                for row in rows:
                    stream.write_row(row)
        except psycopg.Error as error:
            postgres._fail(f"write {table.name}", error)

    def _schema(self) -> list[str]:
        return list(postgres.SCHEMA)

    def _run(self, statements: Sequence[str]) -> None:
        try:
            with self._write.transaction():
                for statement in statements:
                    self._write.execute(statement)
        except psycopg.Error as error:
            postgres._fail("change the schema", error)

    def _literal(self, text: str) -> str:
        return sql.Literal(text).as_string(self._write)

    def finish(self) -> None:
        """The indexes back; the next versions numbered after the ones copied; and the
        statistics that the planner chooses its plans from, which a bulk load leaves to
        autovacuum's next pass (PostgreSQL's advice after one: ANALYZE)."""
        super().finish()
        try:
            self._write.execute(
                "SELECT setval(pg_get_serial_sequence('versions', 'seq'), max(seq))"
                " FROM versions HAVING max(seq) IS NOT NULL"
            )
            self._write.execute("ANALYZE")
        except psycopg.Error as error:
            postgres._fail("number the versions and analyse the tables", error)

    def close(self) -> None:
        self._read.close()
        self._write.close()

    def is_storage_of(self, other: Endpoint) -> bool:
        """By a lock: an advisory lock is the database's, whatever its address is called
        (``localhost``, ``127.0.0.1``, a socket), and needs no privilege; then the schema."""
        if not isinstance(other, PostgresEndpoint):
            return False
        key = secrets.randbits(63)
        try:
            self._read.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                taken = other._read.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if taken is not None and taken[0]:
                    other._read.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    return False
            finally:
                self._read.execute("SELECT pg_advisory_unlock(%s)", (key,))
            schema = "SELECT current_schema()"
            return self._query(schema) == other._query(schema)
        except psycopg.Error as error:
            postgres._fail("compare the source and the destination", error)


def open_endpoint(location: str | Path, *, copy_of: str | None = None) -> Endpoint:
    """A PostgreSQL URL, or the path of an SQLite file (``sqlite://`` before it or not);
    ``copy_of``: as the destination of a copy of that storage."""
    text = str(location)
    if postgres.is_url(text):
        return PostgresEndpoint(text, copy_of=copy_of)
    return SqliteEndpoint(Path(text.removeprefix("sqlite://")), copy_of=copy_of)


class NotACopy(StorageError):
    """The destination holds rows that do not make it a partial copy of the source."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a table's copy carries on: after ``key`` (None: from the start), the
    destination holding ``rows`` of it already."""

    key: Row | None = None
    rows: int = 0


def _resume_points(source: Endpoint, destination: Endpoint) -> dict[str, Resume]:
    """Where each table's copy carries on: after the destination's last key, once the
    destination is shown to hold a prefix of the source's rows (same count up to that
    key, same last row); anything else is refused before a row is written."""
    points = {}
    for table in TABLES:
        last = destination.last_key(table)
        if last is None:
            points[table.name] = Resume()
            continue
        held = destination.count(table)
        if (
            source.row_at(table, last) != destination.row_at(table, last)
            or source.count_upto(table, last) != held
        ):
            raise NotACopy(
                f"the destination is not empty and its table {table.name} is not a partial copy"
                " of the source's: give an empty destination"
            )
        points[table.name] = Resume(last, held)
    return points


def copy_tables(
    source: Endpoint,
    destination: Endpoint,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    leaf_fold: Callable[[], LeafFold] | None = None,
) -> CopyReport:
    """Copy every table of ``source`` into ``destination`` (empty, or a partial copy of
    this source), from one snapshot of the source, then read the destination back and
    report what both sides hold. The destination is marked as an unfinished copy until
    the two sides are shown to hold the same."""
    if source.is_storage_of(destination):
        raise StorageError("the source and the destination are the same storage")
    source.check_schema()
    destination.check_schema()
    unfinished = source.unfinished_copy()
    if unfinished is not None:
        raise StorageError(
            f"the source is itself an unfinished copy (of {unfinished!r}): finish that copy"
            " first, by running the command that made it again"
        )
    with source.snapshot():
        points = _resume_points(source, destination)
        destination.mark_unfinished(source.location)
        destination.set_indexes_aside()
        if progress is not None:
            progress.start(sum(source.count(table) for table in TABLES))
        copied = _copy_rows(source, destination, points, batch, progress, leaf_fold)
    # The indexes are built while the rows are read back: building them changes no row.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coffre-index") as thread:
        finished = thread.submit(destination.finish)
        with destination.snapshot():
            held = summarise(destination, batch, leaf_fold)
        finished.result()
    report = CopyReport(copied, held, {name: point.rows for name, point in points.items()})
    if not report.mismatched:
        destination.clear_unfinished()
    return report


def _copy_rows(
    source: Endpoint,
    destination: Endpoint,
    points: dict[str, Resume],
    batch: int,
    progress: Progress | None,
    leaf_fold: Callable[[], LeafFold] | None,
) -> Side:
    side = Side({}, leaf_fold() if leaf_fold else None)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coffre-copy") as thread:
        writer = _Writer(destination, progress, thread)
        for table in TABLES:
            summary = side.tables[table.name] = Summary()
            after = points[table.name].key
            for rows in source.batches(table, batch):
                summary.add(rows)
                _fold_leaves(side, table, rows)
                new = rows if after is None else [r for r in rows if table.key_of(r) > after]
                writer.write(table, new, len(rows))
        writer.wait()
    return side


class _Writer:
    """Writes each batch in a thread of its own while the next one is read and
    summarised, so that both databases work at once; one write at a time, in order. The
    progress hears of a batch once it is written, when no write is under way."""

    def __init__(
        self, destination: Endpoint, progress: Progress | None, thread: ThreadPoolExecutor
    ) -> None:
        self._destination = destination
        self._progress = progress
        self._thread = thread
        self._pending: tuple[Future[None] | None, int, int] | None = None

    def write(self, table: Table, rows: Sequence[Row], read: int) -> None:
        """Write ``rows`` (``read`` rows of the source went by for them) once the previous
        batch is written."""
        self.wait()
        written = self._thread.submit(self._destination.insert, table, rows) if rows else None
        self._pending = (written, read, table.data_bytes(rows))

    def wait(self) -> None:
        """Until the batch under way is written (its error raised here), then its progress."""
        if self._pending is None:
            return
        written, read, data_bytes = self._pending
        self._pending = None
        if written is not None:
            written.result()
        if self._progress is not None:
            self._progress.advance(read, data_bytes)


def summarise(endpoint: Endpoint, batch: int, leaf_fold: Callable[[], LeafFold] | None) -> Side:
    """What a storage holds: each table's summary, and its leaves folded."""
    side = Side({}, leaf_fold() if leaf_fold else None)
    for table in TABLES:
        summary = side.tables[table.name] = Summary()
        for rows in endpoint.batches(table, batch):
            summary.add(rows)
            _fold_leaves(side, table, rows)
    return side


def _fold_leaves(side: Side, table: Table, rows: Sequence[Row]) -> None:
    if side.leaves is not None and table.name == "leaves":
        for row in rows:
            side.leaves.add(bytes(row[1]))


@contextmanager
def endpoints(source: str | Path, destination: str | Path) -> Iterator[tuple[Endpoint, Endpoint]]:
    """Both sides opened (the destination given the schema if it has none), then closed."""
    with (
        closing(open_endpoint(source)) as reader,
        closing(open_endpoint(destination, copy_of=str(source))) as writer,
    ):
        yield reader, writer
