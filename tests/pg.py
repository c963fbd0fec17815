"""Tests on both storages: a throwaway PostgreSQL server for the test run (tests/pgserver.py:
Debian's binaries, a temporary folder, a free loopback port, TLS with verify-full, a
schema per test), and the fixtures that run every test built on a vault twice: on SQLite
with the keyring file and on PostgreSQL with a PKCS#11 token (ids ``[sqlite-keyring]``
and ``[postgresql-pkcs11]``).

Tests that act as the host go through ``HostDatabase`` (tampering), ``copy_storage``
(keeping and putting back a copy) and ``stored_bytes`` (scanning for plaintext), which
work on either storage. Where PostgreSQL is not installed its half skips, and fails
under CI=true.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgserver import Cluster, binaries
from psycopg.conninfo import conninfo_to_dict

from coffre.service import Vault
from coffre.service.vault import STORAGE_FILE, STORAGE_URL_FILE
from coffre.storage import SqliteStorage
from coffre.storage.postgres import SCHEMA, PostgresStorage

TABLES = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", "\n".join(SCHEMA))


BACKENDS = ("sqlite", "postgresql")
# The key custody each storage is paired with when a test does not choose one: the keyring
# file beside SQLite, a PKCS#11 token (SoftHSM2) beside PostgreSQL as in production, so
# that every vault test covers both storages and both custodies in two runs, not four.
PAIRED_CUSTODY = {"sqlite": "keyring", "postgresql": "pkcs11"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        markers = metafunc.definition.iter_markers("parametrize")
        if any(marker.args[0] == "vault" for marker in markers):  # the test chooses custody
            metafunc.parametrize("backend", BACKENDS, indirect=True)
        else:
            pairs = [pytest.param(name, id=f"{name}-{PAIRED_CUSTODY[name]}") for name in BACKENDS]
            metafunc.parametrize("backend", pairs, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Which storage the test's vault uses."""
    name: str = request.param
    return name


@pytest.fixture
def paired_custody(backend: str) -> str:
    """The key custody of the test's vault unless the test chooses one."""
    return PAIRED_CUSTODY[backend]


def _new_cluster() -> Iterator[Cluster]:
    bin_dir = binaries()
    if bin_dir is None:
        message = "PostgreSQL is not installed (`make test` installs Debian's postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL server for this test process, stopped and removed at the end."""
    yield from _new_cluster()


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    """A PostgreSQL server of the test's own, for a test that stops it or changes its
    settings (a few seconds to make)."""
    yield from _new_cluster()


@pytest.fixture
def storage_url(backend: str, request: pytest.FixtureRequest) -> str:
    """Where the test's vault keeps its storage: "" for the SQLite file in its folder, else
    a new database on the test server."""
    if backend == "sqlite":
        return ""
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.new_storage_url()


class HostDatabase:
    """A storage's database opened as its host could open it, for tests that tamper with
    it: ``execute`` takes SQLite's ``?`` placeholders on either backend and returns a
    cursor; the changes are committed when the ``with`` block ends."""

    def __init__(self, location: str | Path) -> None:
        self._db: psycopg.Connection[tuple[Any, ...]] | sqlite3.Connection = (
            psycopg.connect(location)
            if isinstance(location, str) and location.startswith("postgresql://")
            else sqlite3.connect(location)
        )

    @classmethod
    def of(cls, holder: Vault | SqliteStorage | PostgresStorage) -> HostDatabase:
        """The database of a vault or of an open storage."""
        if isinstance(holder, Vault):
            return cls(holder.storage_url or holder.storage_path)
        return cls(holder.url if isinstance(holder, PostgresStorage) else holder.path)

    @property
    def sqlite(self) -> bool:
        return isinstance(self._db, sqlite3.Connection)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        if isinstance(self._db, psycopg.Connection):
            return self._db.execute(sql.replace("?", "%s"), args, binary=True)
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if isinstance(self._db, psycopg.Connection):
            self._db.cursor().executemany(sql.replace("?", "%s"), rows)
        else:
            self._db.executemany(sql, rows)

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HostDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.commit()
        finally:
            self.close()


def stored_bytes(vault: Vault) -> bytes:
    """Everything the host stores for a vault, as bytes to scan for plaintext: SQLite's
    file (its WAL checkpointed into it), or a pg_dump of the database with every bytea
    value decoded from its hex escape back to the bytes it holds."""
    url = vault.storage_url
    if url is None:
        with closing(sqlite3.connect(vault.storage_path)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return vault.storage_path.read_bytes()
    bin_dir = binaries()
    assert bin_dir is not None
    schema = schema_of(url)
    dump = subprocess.run(
        [str(bin_dir / "pg_dump"), "--dbname", url, "--schema", schema],
        check=True,
        capture_output=True,
    ).stdout
    assert f"COPY {schema}.versions".encode() in dump, "the dump holds no data"
    return re.sub(rb"\\\\x([0-9a-f]*)", lambda hexa: bytes.fromhex(hexa[1].decode()), dump)


def copy_storage(source: Vault, folder: Path) -> None:
    """Put a copy of ``source``'s storage in the vault folder ``folder``, as a host keeping
    a copy would, or put such a copy back: SQLite's file through the backup API, or for
    PostgreSQL a schema of the same database, which ``folder/storage.url`` names. Whatever
    the folder's storage held is replaced."""
    url = source.storage_url
    if url is None:
        with (
            closing(sqlite3.connect(source.storage_path)) as live,
            closing(sqlite3.connect(folder / STORAGE_FILE)) as copy,
        ):
            live.backup(copy)
        return
    target = Vault.at(folder).storage_url
    if target is None:  # a schema beside the source's, named after it
        target = f"{url}_copy"
        (folder / STORAGE_URL_FILE).write_text(target)
    from_schema, to_schema = schema_of(url), schema_of(target)
    with psycopg.connect(url) as db:
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {to_schema}")
        for table in TABLES:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {to_schema}.{table}"
                f" (LIKE {from_schema}.{table} INCLUDING ALL)"
            )
            db.execute(f"TRUNCATE {to_schema}.{table}")
            db.execute(
                f"INSERT INTO {to_schema}.{table} OVERRIDING SYSTEM VALUE"
                f" SELECT * FROM {from_schema}.{table}"
            )
        db.execute(  # the copy's next versions are numbered after the ones it holds
            f"SELECT setval(pg_get_serial_sequence('{to_schema}.versions', 'seq'),"
            f" greatest((SELECT max(seq) FROM {to_schema}.versions),"
            f" (SELECT last_value FROM pg_sequences WHERE schemaname = '{to_schema}'"
            " AND sequencename LIKE 'versions_seq%')))"
        )


def tables_in(url: str) -> list[str]:
    """The tables of the schema a test's storage URL names, sorted."""
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() ORDER BY table_name"
        ).fetchall()
    return [row[0] for row in rows]


def schema_of(url: str) -> str:
    """The schema a test's storage URL puts first in the search path."""
    return conninfo_to_dict(url)["options"].removeprefix("-csearch_path=")
