"""The PostgreSQL storage: several `coffre serve` processes, on several hosts, share one
database.

Reads take a connection from a pool and see only committed data. Writes use one
connection of their own; each write transaction starts by taking a transaction-scoped
advisory lock, the log's one sequencer: writers of every process queue on it, as they
queue on SQLite's write lock, so that leaf indexes and version numbers never race.
Under that lock READ COMMITTED is enough: each statement reads a snapshot taken after
the lock was granted, so it sees everything the previous holder committed. (REPEATABLE
READ would take its snapshot at the lock's own statement, before the wait, and miss it.)

Commits wait for the WAL flush (``synchronous_commit = on``, whatever the server's
default): every acknowledged write is durable. psycopg's errors become StorageError here
and nowhere else, named by class and SQLSTATE only: PostgreSQL's messages can quote the
values of a row.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from coffre import config
from coffre.exceptions import CommitUnknownError, LogDamagedError, StorageError, StorageFullError
from coffre.storage.base import ORIGIN, HistoryQuery, SealedEvent, SealedVersion

URL_SCHEMES = ("postgresql://", "postgres://")
LOOPBACK = ("localhost", "127.0.0.1", "::1")
DISK_FULL = "53100"
READ_ONLY = (
    "the storage takes no writes (a read-only database, or a standby): nothing can be"
    " served, since every read is logged"
)
POOL_SIZE = 8
"""Read connections per process at most (the write connection is apart)."""
POOL_WAIT_SECONDS = 5.0
"""How long a read waits for a pooled connection before it fails (a 503 for the client):
all are in use, or none can be opened (the database is down). Reads run on the server's
event loop, so the wait holds up every request of the process. It also bounds the pool's
attempts to reconnect in the background, whose delays double from one second: past it
the pool stops, and the next read tries again at once, so that a database back after a
long outage serves the next request rather than the end of a backoff."""
POOL_WAIT_WHILE_AWAY_SECONDS = 0.1
"""How long a read waits for a pooled connection when the previous one found none (the
database away): its 503 comes at once, instead of holding up the process's other
requests (its liveness probe among them) for POOL_WAIT_SECONDS each; the pool reconnects
in the background, and once a read has a connection again, the next wait the full time."""
CONNECT_TIMEOUT_SECONDS = 10
"""How long opening a connection may take, unless the URL's ``connect_timeout`` or
PGCONNECT_TIMEOUT says otherwise: psycopg would wait 130 s for a server that takes the
connection and never answers (a hung database, a proxy with nothing behind it)."""
UNREACHABLE_SECONDS = 30
"""How long a connection waits for the database's host to acknowledge what it sent, and
how long an idle one goes unheard before it is probed (then every 10 s, three times),
unless the URL's ``tcp_user_timeout`` or ``keepalives*`` say otherwise. Without them a
host that vanished (a network partition, a failover that moved its address, a power cut)
holds a statement until the kernel gives up, about 15 minutes: the write under way, and
with it every write of the process, waits that long."""
PURGE_LOCK_SECONDS = 10
"""How long an erasure's purge waits for the data keys' table, which another
connection's transaction can hold (a long report, a stuck session): while VACUUM FULL
waits for it, every read of the table queues behind it, so every request would wait as
long. Past it the purge fails, and running ``coffre erase`` again finishes it."""
WRITE_LOCK = 0x636F66667265  # "coffre": the advisory lock every write transaction holds
SCHEMA_LOCK = WRITE_LOCK + 1  # held while the schema is created or brought up to date

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS coffre_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS versions (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        loc bytea NOT NULL,
        version integer NOT NULL,
        kind bytea NOT NULL,
        comp bytea NOT NULL,
        ts bigint NOT NULL,
        deleted boolean NOT NULL,
        body bytea NOT NULL,
        UNIQUE (loc, version)
    )""",
    "CREATE INDEX IF NOT EXISTS versions_by_kind ON versions (kind, seq)",
    """CREATE TABLE IF NOT EXISTS current (
        loc bytea PRIMARY KEY,
        version integer NOT NULL,
        kind bytea NOT NULL,
        comp bytea NOT NULL,
        deleted boolean NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS current_by_kind ON current (kind) WHERE NOT deleted",
    """CREATE TABLE IF NOT EXISTS tokens (
        token bytea NOT NULL,
        loc bytea NOT NULL,
        PRIMARY KEY (token, loc)
    )""",
    "CREATE INDEX IF NOT EXISTS tokens_by_loc ON tokens (loc)",
    "CREATE TABLE IF NOT EXISTS leaves (idx bigint PRIMARY KEY, data bytea NOT NULL)",
    """CREATE TABLE IF NOT EXISTS tree_nodes (
        level integer NOT NULL,
        idx bigint NOT NULL,
        hash bytea NOT NULL,
        PRIMARY KEY (level, idx)
    )""",
    "CREATE TABLE IF NOT EXISTS checkpoints (size bigint PRIMARY KEY, note text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS audit_events (
        leaf bigint PRIMARY KEY,
        digest bytea NOT NULL,
        comp bytea NOT NULL,
        body bytea NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_events_by_comp ON audit_events (comp, leaf)",
    """CREATE TABLE IF NOT EXISTS data_keys (
        comp bytea PRIMARY KEY,
        kek_id text NOT NULL,
        wrapped bytea NOT NULL
    )""",
)

SCHEMA_MARK = "coffre schema " + hashlib.sha256("\n".join(SCHEMA).encode()).hexdigest()[:16]
"""The comment on coffre_meta once the tables are those of ``SCHEMA``: a process that
reads it there opens the storage without taking the schema's locks. A comment, not a
row, so that a copy of the storage's rows to another backend carries nothing of it."""
_MARK_READ = "SELECT obj_description(to_regclass('coffre_meta'), 'pg_class')"

HOLDS_STORAGE = "SELECT to_regclass('versions') IS NOT NULL"
ALREADY_A_STORAGE = "the PostgreSQL database already holds a Coffre storage"

_COLUMNS = "loc, version, kind, comp, ts, deleted, body, seq"


def is_url(location: str) -> bool:
    return location.startswith(URL_SCHEMES)


def check_url(url: str) -> None:
    """Refuse a URL that is not PostgreSQL's or that carries a password: the URL is kept
    in the vault folder, the password belongs in PGPASSFILE, a service file or PGPASSWORD.

    libpq's TLS parameters pass through as they are: ``sslmode=verify-full`` (encrypt, check
    the server's certificate against ``sslrootcert`` and its name against the host) and
    ``sslcert``/``sslkey`` for a client certificate; ``sslpassword`` is a secret too and is
    refused. With ``COFFRE_STORAGE_REQUIRE_TLS=1`` a URL that does not say
    ``sslmode=verify-full`` is refused (the environment's PGSSLMODE does not count: the URL
    alone is what every process of the deployment reads)."""
    if not is_url(url):
        raise StorageError("a PostgreSQL storage URL starts with postgresql://")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        unknown = re.search(r'invalid URI query parameter: "([A-Za-z_]+)"', str(error))
        raise StorageError(
            "the PostgreSQL storage URL cannot be parsed"
            + (f": libpq takes no parameter '{unknown[1]}' (sslmode?)" if unknown else "")
        ) from None
    if params.get("password") or params.get("sslpassword"):
        raise StorageError(
            "the storage URL must not hold a password: use PGPASSFILE, a service file"
            " (PGSERVICEFILE) or PGPASSWORD"
        )
    if config.STORAGE_REQUIRE_TLS.value() == "1" and params.get("sslmode") != "verify-full":
        read_as = params.get("sslmode") or "prefer, the default"
        overridden = "; a requiressl parameter overrides sslmode" if "requiressl" in url else ""
        raise StorageError(
            f"{config.STORAGE_REQUIRE_TLS.env}=1: the storage URL must ask for"
            " sslmode=verify-full (with sslrootcert=the authority of the server's certificate);"
            f" libpq reads it as sslmode={read_as}{overridden}"
        )


def reached_in_clear(url: str) -> bool:
    """Whether the storage is reached over a network without TLS that checks the server
    (no ``sslmode=verify-full``, a host other than this machine): tokens, locations and the
    log, sealed or not, cross it readable and alterable by whoever sits on the path."""
    params = conninfo_to_dict(url)
    hosts = [host for host in str(params.get("host") or "").split(",") if host]
    local = all(host.startswith("/") or host in LOOPBACK for host in hosts)
    return params.get("sslmode") != "verify-full" and not local


def check_room(url: str) -> None:
    """Refuse, making nothing, a database that a new storage cannot be made in: one that
    cannot be reached, that already holds a Coffre storage, or whose role may not create
    tables in the schema the URL's search path names (in a database's public schema, since
    PostgreSQL 15, only its owner may)."""
    check_url(url)
    with closing(_connect(url)) as db:
        try:
            row = db.execute(
                f"SELECT ({HOLDS_STORAGE}), current_user, current_schema(),"
                " has_schema_privilege(current_schema(), 'CREATE')"
            ).fetchone()
        except psycopg.Error as error:
            _fail("read", error)
    held, role, schema, may_create = row or (False, None, None, None)
    if held:
        raise StorageError(ALREADY_A_STORAGE)
    if schema is None:
        raise StorageError(
            "the PostgreSQL storage URL's search path names no schema that exists: create"
            " the schema, or name one that exists"
        )
    if not may_create:
        raise StorageError(
            f"the PostgreSQL role {role} may not create tables in the schema {schema}: make"
            f" it the database's owner (createdb -O {role}) or GRANT CREATE ON SCHEMA {schema}"
            f" TO {role}"
        )


def _fail(what: str, error: psycopg.Error) -> NoReturn:
    kind = StorageFullError if error.sqlstate == DISK_FULL else StorageError
    raise kind(
        f"PostgreSQL could not {what} ({type(error).__name__}, SQLSTATE {error.sqlstate})"
    ) from None


def _fail_write(error: psycopg.Error) -> NoReturn:
    """A failed write; queued, it may be told a statement or two later, hence the table."""
    if isinstance(error, psycopg.errors.UniqueViolation) and error.diag.table_name == "leaves":
        raise StorageError("the log already has a leaf where this transaction adds one") from None
    _fail("write", error)


def _version(row: Sequence[Any]) -> SealedVersion:
    return SealedVersion(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


def _conninfo(url: str) -> str:
    """What to connect with: the URL, with Coffre's timeouts where it sets none (the
    connect timeout where PGCONNECT_TIMEOUT does not either)."""
    given = conninfo_to_dict(url)
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "tcp_user_timeout": UNREACHABLE_SECONDS * 1000,
        "keepalives": 1,
        "keepalives_idle": UNREACHABLE_SECONDS,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if os.environ.get("PGCONNECT_TIMEOUT"):
        del defaults["connect_timeout"]
    added = {name: value for name, value in defaults.items() if name not in given}
    return make_conninfo(url, **added) if added else url


def _connect(url: str, autocommit: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection whose statements are prepared on first use, committing durably."""
    try:
        connection = psycopg.connect(_conninfo(url), autocommit=autocommit, prepare_threshold=0)
        connection.execute("SET synchronous_commit = on")
    except psycopg.OperationalError as error:
        # libpq's connection messages name the server and the user, never a password.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StorageError(f"cannot connect to the PostgreSQL storage: {first_line}") from None
    except psycopg.Error as error:
        _fail("open a connection", error)
    return connection


def _alive(connection: psycopg.Connection[tuple[Any, ...]]) -> bool:
    """Whether an idle connection still holds its session. A server that ended it (a
    restart, ``pg_terminate_backend``, ``idle_session_timeout``) sent its last words and
    closed the socket, which then reads as ready; a live idle session has nothing to say.
    One poll, no round trip (something else said on the socket costs a reconnection);
    poll(), not select(), which takes no descriptor past 1023: a process serving a thousand
    clients opens its next connection past it."""
    if connection.closed or connection.broken:
        return False
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return not poller.poll(0)


class _Reader:
    """Every read, over whatever ``_rows`` runs them on."""

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def latest(self, loc: bytes) -> SealedVersion | None:
        row = self._one(
            f"SELECT {_COLUMNS} FROM versions WHERE loc = %s ORDER BY version DESC LIMIT 1",
            (loc,),
        )
        return _version(row) if row else None

    def version(self, loc: bytes, version: int) -> SealedVersion | None:
        row = self._one(
            f"SELECT {_COLUMNS} FROM versions WHERE loc = %s AND version = %s", (loc, version)
        )
        return _version(row) if row else None

    def find(
        self, tokens: Sequence[bytes], after: bytes = b"", limit: int | None = None
    ) -> list[bytes]:
        """With a limit, each token's first ``limit`` locations only (the primary key's
        order within a token), so that a token of many records is not read through."""
        if limit is None:
            sql = (
                "SELECT DISTINCT loc FROM tokens WHERE token = ANY(%s::bytea[]) AND loc > %s"
                " ORDER BY loc"
            )
            return [row[0] for row in self._rows(sql, (list(tokens), after))]
        sql = (
            "SELECT DISTINCT found.loc FROM unnest(%s::bytea[]) AS wanted(token),"
            " LATERAL (SELECT loc FROM tokens WHERE token = wanted.token AND loc > %s"
            " ORDER BY loc LIMIT %s) AS found ORDER BY found.loc LIMIT %s"
        )
        return [row[0] for row in self._rows(sql, (list(tokens), after, limit, limit))]

    def carrying(self, tokens: Sequence[bytes], locs: Sequence[bytes]) -> set[bytes]:
        rows = self._rows(
            "SELECT loc FROM tokens WHERE token = ANY(%s::bytea[]) AND loc = ANY(%s::bytea[])",
            (list(tokens), list(locs)),
        )
        return {row[0] for row in rows}

    def latest_each(self, locs: Sequence[bytes]) -> dict[bytes, SealedVersion]:
        rows = self._rows(
            f"SELECT DISTINCT ON (loc) {_COLUMNS} FROM versions WHERE loc = ANY(%s::bytea[])"
            " ORDER BY loc, version DESC",
            (list(locs),),
        )
        return {row[0]: _version(row) for row in rows}

    def kinds_present(self, kinds: Sequence[bytes]) -> set[bytes]:
        rows = self._rows(
            "SELECT wanted.kind FROM unnest(%s::bytea[]) AS wanted(kind) WHERE EXISTS"
            " (SELECT 1 FROM current c WHERE c.kind = wanted.kind AND NOT c.deleted)",
            (list(kinds),),
        )
        return {bytes(row[0]) for row in rows}

    def tokens_of(self, loc: bytes) -> list[bytes]:
        return [row[0] for row in self._rows("SELECT token FROM tokens WHERE loc = %s", (loc,))]

    def joined_tokens(self, locs: Sequence[bytes]) -> dict[bytes, bytes]:
        rows = self._rows(
            "SELECT loc, string_agg(token, ''::bytea ORDER BY token) FROM tokens"
            " WHERE loc = ANY(%s::bytea[]) GROUP BY loc",
            (list(locs),),
        )
        return {loc: joined for loc, joined in rows}

    def last_seq(self) -> int:
        row = self._one("SELECT max(seq) FROM versions")
        return int(row[0] or 0) if row else 0

    def leaf_count(self) -> int:
        row = self._one("SELECT max(idx) FROM leaves")
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def leaves(self, start: int, end: int) -> list[bytes]:
        rows = self._rows(
            "SELECT idx, data FROM leaves WHERE idx >= %s AND idx < %s ORDER BY idx", (start, end)
        )
        if rows and (rows[0][0] != start or rows[-1][0] != start + len(rows) - 1):
            raise LogDamagedError(f"the log has a gap between leaves {start} and {end}")
        return [row[1] for row in rows]

    def nodes(self, level: int, start: int, end: int) -> list[bytes]:
        rows = self._rows(
            "SELECT idx, hash FROM tree_nodes WHERE level = %s AND idx >= %s AND idx < %s"
            " ORDER BY idx",
            (level, start, end),
        )
        if rows and (rows[0][0] != start or rows[-1][0] != start + len(rows) - 1):
            raise LogDamagedError(f"the tree has a gap at level {level} between {start} and {end}")
        return [row[1] for row in rows]

    def latest_checkpoint(self) -> str | None:
        row = self._one("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return None if row is None else str(row[0])

    def vault_origin(self) -> str | None:
        return self.meta(ORIGIN)

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM coffre_meta WHERE key = %s", (key,))
        return None if row is None else str(row[0])

    def checkpoint_at(self, size: int) -> str | None:
        row = self._one("SELECT note FROM checkpoints WHERE size = %s", (size,))
        return None if row is None else str(row[0])

    def wrapped_key(self, comp: bytes) -> tuple[str, bytes] | None:
        row = self._one("SELECT kek_id, wrapped FROM data_keys WHERE comp = %s", (comp,))
        return (row[0], row[1]) if row else None

    def wrapped_key_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT kek_id, count(*) FROM data_keys GROUP BY kek_id")
        return {str(kek_id): int(count) for kek_id, count in rows}

    def wrapped_keys_besides(
        self, kek_id: str, after: bytes, limit: int
    ) -> list[tuple[bytes, str, bytes]]:
        rows = self._rows(
            "SELECT comp, kek_id, wrapped FROM data_keys WHERE kek_id <> %s AND comp > %s"
            " ORDER BY comp LIMIT %s",
            (kek_id, after, limit),
        )
        return [(bytes(comp), str(kek), bytes(wrapped)) for comp, kek, wrapped in rows]

    def records_of(self, comp: bytes) -> list[bytes]:
        return [row[0] for row in self._rows("SELECT loc FROM current WHERE comp = %s", (comp,))]


_LOG_END = (
    "SELECT coalesce(max(idx) + 1, 0) FROM leaves",
    "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
)


@dataclass(slots=True)
class _LogEnd:
    """What a write transaction knows of the log's end."""

    leaf_count: int
    checkpoint: tuple[int, str] | None


class _Txn(_Reader):
    """One write transaction, on the write connection in pipeline mode, under the write lock.

    A statement whose answer nothing waits for (an insert, a savepoint) is queued and goes
    out with the next one that is read, so that a request costs a round trip or two rather
    than one per statement. A queued statement that fails makes the next one raise; a
    savepoint waits for every answer before it ends, so a failure stays its own.
    """

    def __init__(
        self, connection: psycopg.Connection[tuple[Any, ...]], pipeline: psycopg.Pipeline
    ) -> None:
        self._db = connection
        self._pipeline = pipeline
        self._depth = 0
        self._log_end: _LogEnd | None = None  # read once under the lock, then kept up to date

    def _execute(
        self, sql: str, args: Sequence[Any] | dict[str, Any] = (), prepare: bool | None = None
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args, binary=True, prepare=prepare)
        except psycopg.Error as error:
            _fail_write(error)

    def _send(
        self, sql: str, args: Sequence[Any] | dict[str, Any] = (), prepare: bool | None = None
    ) -> None:
        """Queue a statement whose rows nobody reads."""
        self._execute(sql, args, prepare)

    def _send_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self._db.cursor(binary=True) as cursor:
                cursor.executemany(sql, rows)
        except psycopg.Error as error:
            _fail_write(error)

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._execute(sql, args)
        try:
            return cursor.fetchall()
        except psycopg.Error as error:
            _fail_write(error)

    def sync(self) -> None:
        """Wait for the answers of every statement queued: StorageError if one failed."""
        try:
            self._pipeline.sync()
        except psycopg.Error as error:
            _fail_write(error)

    def sync_commit(self) -> None:
        """Wait for the answers up to COMMIT's. CommitUnknownError where the server may
        have committed: the connection lost, or ended by the server (SQLSTATE class 08, or
        57P..: an administrator's command, a shutdown, a failover), which can come as the
        answer to a COMMIT it carried out; StorageError where it said it rolled back (a
        cancelled statement, 57014, among them)."""
        try:
            self._pipeline.sync()
        except psycopg.Error as error:
            state = error.sqlstate or ""
            if self._db.broken or not state or state.startswith(("08", "57P")):
                raise CommitUnknownError() from None
            _fail_write(error)

    def drain(self) -> None:
        """Collect what is queued whatever it answers, so that the transaction can be undone
        (after a failure the server skips the rest of the queue until a sync)."""
        with suppress(psycopg.Error):
            self._pipeline.sync()

    def _end(self) -> _LogEnd:
        """The log's end: read in one round trip when the transaction first asks for any of
        it (two statements sent together), then kept as this transaction writes, since
        under the write lock nobody else adds to the log."""
        if self._log_end is None:
            cursors = [self._execute(sql) for sql in _LOG_END]
            try:
                (count,), checkpoints = (cursor.fetchall() for cursor in cursors)
            except psycopg.Error as error:
                _fail_write(error)
            self._log_end = _LogEnd(
                int(count[0]),
                (int(checkpoints[0][0]), str(checkpoints[0][1])) if checkpoints else None,
            )
        return self._log_end

    def leaf_count(self) -> int:
        return self._end().leaf_count

    def latest_checkpoint(self) -> str | None:
        checkpoint = self._end().checkpoint
        return None if checkpoint is None else checkpoint[1]

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._depth += 1
        name = f"s{self._depth}"
        log_end = None if self._log_end is None else replace(self._log_end)
        self._send(f"SAVEPOINT {name}", prepare=False)
        try:
            yield
            self.sync()
        except BaseException:
            # The log's end as it was first: should the connection be gone, the rollback
            # fails too, and the group commit's other requests must still count right (a
            # count that kept this one's leaves was taken for a log altered by the host).
            self._log_end = log_end
            self.drain()
            self._send(f"ROLLBACK TO SAVEPOINT {name}", prepare=False)
            # On a ROLLBACK's answer psycopg forgets its prepared statements, and has the
            # server forget them after the next statement it sends: so the answer is
            # awaited here, and that next statement (the release) is not a prepared one.
            self.sync()
            raise
        finally:
            self._send(f"RELEASE SAVEPOINT {name}", prepare=False)
            self._depth -= 1

    def append(self, record: SealedVersion, tokens: Iterable[bytes]) -> None:
        """One statement, queued: the version, its current pointer, and its tokens (those
        it no longer carries deleted, the new ones added)."""
        self._send(
            "WITH version AS ("
            "  INSERT INTO versions (loc, version, kind, comp, ts, deleted, body)"
            "  VALUES (%(loc)s, %(version)s, %(kind)s, %(comp)s, %(ts)s, %(deleted)s, %(body)s)"
            "  RETURNING seq),"
            " pointer AS ("
            "  INSERT INTO current (loc, version, kind, comp, deleted)"
            "  VALUES (%(loc)s, %(version)s, %(kind)s, %(comp)s, %(deleted)s)"
            "  ON CONFLICT (loc) DO UPDATE SET version = excluded.version,"
            "  kind = excluded.kind, comp = excluded.comp, deleted = excluded.deleted),"
            " dropped AS ("
            "  DELETE FROM tokens WHERE loc = %(loc)s AND token <> ALL(%(tokens)s::bytea[])),"
            " added AS ("
            "  INSERT INTO tokens (token, loc) SELECT DISTINCT token, %(loc)s"
            "  FROM unnest(%(tokens)s::bytea[]) AS token ON CONFLICT DO NOTHING)"
            # A statement whose own target were tokens would lock that table before the
            # others, and deadlock with a process creating the indexes at its start.
            " SELECT FROM version",
            {
                "loc": record.loc,
                "version": record.version,
                "kind": record.kind,
                "comp": record.comp,
                "ts": record.ts,
                "deleted": record.deleted,
                "body": record.body,
                "tokens": list(tokens),
            },
        )

    def append_leaves(self, start: int, leaves: Sequence[bytes]) -> None:
        """Add leaves from ``start``, which must be the end of the log (the caller read
        ``leaf_count`` under the same write lock); a wrong index fails, never overwrites."""
        self._send_many("INSERT INTO leaves (idx, data) VALUES (%s, %s)", enumerate(leaves, start))
        if leaves:
            self._end().leaf_count = start + len(leaves)

    def append_events(self, events: Sequence[SealedEvent]) -> None:
        self._send_many(
            "INSERT INTO audit_events (digest, comp, leaf, body) VALUES (%s, %s, %s, %s)",
            [(event.digest, event.comp, event.leaf, event.body) for event in events],
        )

    def put_nodes(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        self._send_many(
            "INSERT INTO tree_nodes (level, idx, hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (level, idx) DO UPDATE SET hash = excluded.hash",
            nodes,
        )

    def put_checkpoint(self, size: int, note: str) -> None:
        end = self._end()
        if end.checkpoint is None or size >= end.checkpoint[0]:
            end.checkpoint = (size, note)
        self._send(
            "INSERT INTO checkpoints (size, note) VALUES (%s, %s)"
            " ON CONFLICT (size) DO UPDATE SET note = excluded.note",
            (size, note),
        )

    def rewrap_key(self, comp: bytes, old: tuple[str, bytes], new: tuple[str, bytes]) -> bool:
        rows = self._rows(
            "UPDATE data_keys SET kek_id = %s, wrapped = %s WHERE comp = %s AND kek_id = %s"
            " AND wrapped = %s RETURNING comp",
            (*new, comp, *old),
        )
        return len(rows) == 1

    def put_wrapped_key(self, comp: bytes, kek_id: str, wrapped: bytes) -> tuple[str, bytes]:
        """One round trip: the key inserted, or the one there already (under the write
        lock nobody inserts in between; the statement's snapshot shows the one before)."""
        row = self._one(
            "WITH added AS (INSERT INTO data_keys (comp, kek_id, wrapped) VALUES (%s, %s, %s)"
            " ON CONFLICT (comp) DO NOTHING RETURNING kek_id, wrapped)"
            " SELECT kek_id, wrapped FROM added"
            " UNION ALL SELECT kek_id, wrapped FROM data_keys WHERE comp = %s",
            (comp, kek_id, wrapped, comp),
        )
        assert row is not None
        return (row[0], row[1])

    def put_meta(self, key: str, value: str) -> str:
        """The value inserted, or the one there already, as ``put_wrapped_key``."""
        row = self._one(
            "WITH added AS (INSERT INTO coffre_meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO NOTHING RETURNING value)"
            " SELECT value FROM added UNION ALL SELECT value FROM coffre_meta WHERE key = %s",
            (key, value, key),
        )
        assert row is not None
        return str(row[0])

    def erase_compartment(self, comp: bytes, locs: Iterable[bytes]) -> None:
        """The rows deleted stay in the table's pages as dead tuples until
        ``purge_erased`` vacuums it."""
        self._send(
            "WITH key AS (DELETE FROM data_keys WHERE comp = %(comp)s),"
            " dropped AS (DELETE FROM tokens WHERE loc = ANY(%(locs)s::bytea[]))"
            " DELETE FROM current WHERE loc = ANY(%(locs)s::bytea[])",
            {"comp": comp, "locs": list(locs)},
        )


class PostgresStorage(_Reader):
    """Sealed versions, index tokens, the log and wrapped keys in one PostgreSQL database.

    ``url`` is a libpq URL without a password (see ``check_url``); ``create`` makes the
    tables in an empty database, otherwise they must exist.
    """

    def __init__(self, url: str, *, create: bool = False, origin: str | None = None) -> None:
        """``create``: make the tables in a database without them, recording ``origin``,
        the vault's log's name, where given."""
        check_url(url)
        self.url = url
        self._write_db = _connect(url)
        self._write_mutex = threading.Lock()  # one write transaction per process at a time
        self._reachable = True  # whether the last read found a connection
        try:
            self._prepare_schema(create, origin)
            self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
                _conninfo(url),
                kwargs={"autocommit": True, "prepare_threshold": 0},
                min_size=1,
                max_size=POOL_SIZE,
                timeout=POOL_WAIT_SECONDS,
                reconnect_timeout=POOL_WAIT_SECONDS,
                num_workers=1,
                open=True,
            )
        except BaseException:
            self._write_db.close()
            raise

    def _prepare_schema(self, create: bool, origin: str | None) -> None:
        """Make the tables (``create``, in a database without them) or check they exist,
        then add any table that a newer Coffre has; under a lock, so that processes
        starting together do not race, and under the write lock. A storage marked as
        holding this Coffre's tables (``SCHEMA_MARK``) is opened as it is: one read
        instead of the schema's statements and locks, at each process's start."""
        if not create and self._marked():
            return
        with self._transaction_on(SCHEMA_LOCK) as txn:
            # CREATE ... IF NOT EXISTS locks its table even when it exists: with the write
            # lock too, no write holds one of them meanwhile (it would deadlock with us).
            txn._execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            row = txn._one(HOLDS_STORAGE)
            exists = bool(row and row[0])
            if create and exists:
                raise StorageError(ALREADY_A_STORAGE)
            if not create and not exists:
                raise StorageError("the PostgreSQL database holds no Coffre storage")
            for statement in SCHEMA:
                txn._execute(statement)
            txn._execute(f"COMMENT ON TABLE coffre_meta IS '{SCHEMA_MARK}'")
            if create and origin is not None:
                txn._execute(
                    "INSERT INTO coffre_meta (key, value) VALUES (%s, %s)", (ORIGIN, origin)
                )

    def _marked(self) -> bool:
        """Whether the tables are marked as this Coffre's (read before the pool opens)."""
        try:
            row = self._write_db.execute(_MARK_READ).fetchone()
        except psycopg.Error as error:
            _fail("read", error)
        return row == (SCHEMA_MARK,)

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._stream(sql, args, size=0))

    def _stream(self, sql: str, args: Sequence[Any], size: int) -> Iterator[tuple[Any, ...]]:
        """The rows of a read, all at once (``size`` 0) or ``size`` at a time. A connection
        that the server dropped while it idled in the pool is replaced, as long as no row
        was handed out yet; the pool discards it."""
        for _ in range(POOL_SIZE + 1):
            started = False
            wait = POOL_WAIT_SECONDS if self._reachable else POOL_WAIT_WHILE_AWAY_SECONDS
            try:
                with self._pool.connection(timeout=wait) as connection:
                    self._reachable = True
                    try:
                        if size == 0:
                            yield from connection.execute(sql, args, binary=True).fetchall()
                            return
                        for row in connection.cursor().stream(sql, args, binary=True, size=size):
                            started = True
                            yield row
                        return
                    except psycopg.Error as error:
                        if started or not connection.broken:
                            _fail("read", error)
            except psycopg.Error as error:  # no connection to be had
                self._reachable = False
                _fail("read", error)
        raise StorageError("PostgreSQL could not read: every connection was dropped")

    def check_writable(self) -> None:
        """Also that the role may add rows to every table of the storage's schema: a
        role granted SELECT alone passed, then every request failed."""
        row = self._one(
            "SELECT current_setting('default_transaction_read_only') = 'on' OR pg_is_in_recovery(),"
            " current_user, current_schema(),"
            " (SELECT string_agg(relname, ', ' ORDER BY relname) FROM pg_class"
            " WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'"
            " AND NOT has_table_privilege(oid, 'INSERT'))"
        )
        if row is None:
            raise StorageError(READ_ONLY)
        read_only, role, schema, unwritable = row
        if read_only:
            raise StorageError(READ_ONLY)
        if unwritable:
            raise StorageError(
                f"the storage's role {role} may not add rows to {unwritable}: nothing can be"
                f" served, since every read is logged (GRANT INSERT, UPDATE, DELETE ON ALL"
                f" TABLES IN SCHEMA {schema} TO {role}, or make it the tables' owner)"
            )

    @contextmanager
    def transaction(self) -> Iterator[_Txn]:
        with self._transaction_on(WRITE_LOCK) as txn:
            yield txn

    @contextmanager
    def _transaction_on(self, lock: int) -> Iterator[_Txn]:
        """BEGIN, the lock and the transaction's first statements leave together; COMMIT
        waits for every answer, the commit's flush included, before returning."""
        with self._write_mutex:
            if not _alive(self._write_db):  # the server dropped it, or a failed rollback
                self._write_db.close()
                self._write_db = _connect(self.url)
            committed = False
            try:
                with self._write_db.pipeline() as pipeline:
                    txn = _Txn(self._write_db, pipeline)
                    txn._send("BEGIN ISOLATION LEVEL READ COMMITTED")
                    txn._send("SELECT pg_advisory_xact_lock(%s)", (lock,))
                    try:
                        yield txn
                        txn._send("COMMIT")
                        txn.sync_commit()
                        committed = True
                    except BaseException:
                        txn.drain()
                        raise
            except psycopg.Error as error:  # leaving pipeline mode failed
                self._rollback()
                if not committed:  # once COMMIT answered, the transaction is saved
                    _fail("commit", error)
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Undo the transaction; if that fails too (the server went away), drop the
        connection so that the next transaction opens a new one, and let the error that
        caused the rollback be the one reported."""
        try:
            self._write_db.execute("ROLLBACK")
        except psycopg.Error:
            self._write_db.close()

    def history(self, query: HistoryQuery) -> Sequence[SealedVersion]:
        where, args = query.where("%s")
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM versions{where} ORDER BY seq DESC LIMIT %s OFFSET %s",
            [*args, query.limit, query.offset],
        )
        return [_version(row) for row in rows]

    def count_history(self, query: HistoryQuery) -> int:
        where, args = query.where("%s")
        row = self._one(f"SELECT count(*) FROM versions{where}", args)
        assert row is not None
        return int(row[0])

    def consolidate_index(self, pages: int) -> bool:
        """Nothing to do: the tokens' B-tree is kept in one piece as it is written."""
        return False

    def rebuild_index(self) -> None:
        """REINDEX the tokens table: its B-trees rebuilt from its rows, which searches and
        reads both read (a damaged index file is what there is to repair). Writes of
        tokens wait meanwhile, and searches that read the index."""
        try:
            with self._pool.connection() as connection:
                connection.execute("REINDEX TABLE tokens", prepare=False)
        except psycopg.Error as error:
            _fail("reindex", error)

    def event_count(self, before: int) -> int:
        row = self._one("SELECT count(*) FROM audit_events WHERE leaf < %s", (before,))
        return int(row[0]) if row else 0

    def events_of(self, comp: bytes) -> Sequence[SealedEvent]:
        rows = self._rows(
            "SELECT digest, comp, leaf, body FROM audit_events WHERE comp = %s ORDER BY leaf DESC",
            (comp,),
        )
        return [SealedEvent(*row) for row in rows]

    def current_of_kind(self, kind: bytes) -> Iterator[SealedVersion]:
        """Streamed: the rows come as the caller asks for them, on a connection of its own."""
        columns = ", ".join("v." + column for column in _COLUMNS.split(", "))
        sql = (
            f"SELECT {columns} FROM current c JOIN versions v"
            " ON v.loc = c.loc AND v.version = c.version"
            " WHERE c.kind = %s AND NOT c.deleted ORDER BY v.seq"
        )
        for row in self._stream(sql, (kind,), size=256):
            yield _version(row)

    def purge_erased(self) -> None:
        """VACUUM FULL rewrites the data keys' table into a new file without the erased
        key (a plain VACUUM frees the dead row but need not overwrite its bytes), and
        VACUUM frees the dead tokens. Neither runs in a transaction: on a connection of
        their own, which waits PURGE_LOCK_SECONDS at most for a table's lock."""
        statement = ""
        try:
            with closing(_connect(self.url)) as connection:
                connection.execute(f"SET lock_timeout = {round(PURGE_LOCK_SECONDS * 1000)}")
                for statement in ("VACUUM FULL data_keys", "VACUUM tokens, current"):
                    connection.execute(statement, prepare=False)
        except psycopg.errors.LockNotAvailable:
            raise StorageError(
                f"another connection's transaction held a table of {statement!r} for over"
                f" {PURGE_LOCK_SECONDS} s, so PostgreSQL could not run it: end that"
                " transaction (pg_stat_activity shows it)"
            ) from None
        except psycopg.Error as error:
            _fail("vacuum", error)

    def close(self) -> None:
        self._pool.close()
        self._write_db.close()
