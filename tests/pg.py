"""Tests on both storages: a throwaway PostgreSQL server for the test run (Debian's
binaries, a temporary folder, a free loopback port, a database per test), and the
fixtures that run every test built on a vault twice, on SQLite and on PostgreSQL.

``@pytest.mark.sqlite_only(reason)`` keeps a test that reads the SQLite file itself to
SQLite. Where PostgreSQL is not installed its half skips, and fails under CI=true.

It runs as the user that installed PostgreSQL's files (``postgres`` on Debian) when the
tests run as root, since PostgreSQL refuses to run as root. Durability settings are off:
the tests kill Coffre, never this server, and ``synchronous_commit`` stays on per session
(the driver sets it), so the ordering guarantees that Coffre relies on still hold.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coffre.service import Vault

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob(BIN_GLOB), key=lambda path: int(Path(path).parent.name))
    for folder in reversed(found):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """``initdb`` and ``pg_ctl start`` in a temporary folder; ``stop`` removes it all."""

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        self._user = self._server_user()
        self.root = Path(tempfile.mkdtemp(prefix="coffre-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._counter = itertools.count()
        if self._user is not None:
            shutil.chown(self.root, self._user, self._user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = " ".join(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items())
        options += f" -p {self.port} -k {self.root}"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", log, "-o", options)

    @staticmethod
    def _server_user() -> str | None:
        """Who runs the server: ourselves, unless we are root."""
        if os.geteuid() != 0:
            return None
        pwd.getpwnam(SERVER_USER)  # KeyError: the package creates this user
        return SERVER_USER

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"coffre_{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): reads the SQLite file itself; runs on SQLite only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("backend", BACKENDS[:1] if sqlite_only else BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Which storage the test's vault uses."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL server for this test process, stopped and removed at the end."""
    bin_dir = binaries()
    if bin_dir is None:
        message = "PostgreSQL is not installed (`make test` installs Debian's postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture
def storage_url(backend: str, request: pytest.FixtureRequest) -> str:
    """Where the test's vault keeps its storage: "" for the SQLite file in its folder, else
    a new database on the test server."""
    if backend == "sqlite":
        return ""
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.create_database()


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
    def of(cls, vault: Vault) -> HostDatabase:
        return cls(vault.storage_url or vault.storage_path)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        if isinstance(self._db, psycopg.Connection):
            return self._db.execute(sql.replace("?", "%s"), args, binary=True)
        return self._db.execute(sql, args)

    def __enter__(self) -> HostDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._db.commit()
        finally:
            self._db.close()
