"""A throwaway PostgreSQL server over TLS, for the tests (tests/pg.py) and the benchmarks
(bench/): Debian's binaries, a temporary folder, a free loopback port.

It speaks TLS only: pg_hba.conf accepts TCP connections with ``hostssl`` alone, its
certificate comes from a test certificate authority made at start, and its URLs ask for
``sslmode=verify-full`` against that authority, so every test on PostgreSQL runs the way
a production deployment should connect.

The server runs as the ``postgres`` user (which Debian's package creates) when we run as
root, since PostgreSQL refuses to run as root. It trusts every local connection that
comes over TLS: it holds test data only, and lives as long as the test run. Durability
settings are off for the tests (the benchmarks keep them on): the tests kill Coffre,
never this server, and ``synchronous_commit`` stays on per session (the driver sets it),
so the ordering guarantees that Coffre relies on still hold.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict
from testca import TestCA

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
ADMIN = "coffre-tests"
"""The application name of the connection that makes each test's schema."""
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "ssl": "on",
    "ssl_min_protocol_version": "TLSv1.2",
}
NOT_DURABLE = {"fsync": "off", "full_page_writes": "off"}
"""What a server that will never be killed can skip."""
HBA = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
"""Unix sockets for pg_ctl, TLS for everything else: a plaintext TCP client is refused."""


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob(BIN_GLOB), key=lambda path: int(Path(path).parent.name))
    for folder in reversed(found):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema`` first in its search path: a storage of its own in a shared
    database. The option comes last, so that a suffix to the URL names another schema."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


class Cluster:
    """``initdb`` and ``pg_ctl start`` in a temporary folder; ``stop`` removes it all.
    ``durable``: every commit flushed to disk, as a production server would."""

    def __init__(self, bin_dir: Path, durable: bool = False) -> None:
        self._bin = bin_dir
        self._user = self._server_user()
        self.root = Path(tempfile.mkdtemp(prefix="coffre-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._counter = itertools.count()
        self.ca = TestCA(self.root / "tls")
        server = self.ca.issue("server")
        if self._user is not None:
            for path in (self.root, self.ca.folder, server.cert, server.key):
                shutil.chown(path, self._user, self._user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        (self.data / "pg_hba.conf").write_text(HBA)
        settings = {
            **SERVER_SETTINGS,
            **({} if durable else NOT_DURABLE),
            "ssl_cert_file": server.cert,
            "ssl_key_file": server.key,
        }
        self._options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        self._options += f" -p {self.port} -k {self.root}"
        self.start_server()
        self._admin = psycopg.connect(self.url(), autocommit=True, application_name=ADMIN)

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
        done = subprocess.run(command, capture_output=True, cwd=self.root, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start_server(self) -> None:
        log = str(self.root / "server.log")
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", log, "-o", self._options)
        self.running = True

    def stop_server(self) -> None:
        """Stop the server as an operator would for maintenance (``fast``: its sessions
        are ended, their transactions rolled back); ``start_server`` starts it again."""
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
        self.running = False

    def url(self, database: str = "postgres", sslrootcert: Path | None = None) -> str:
        """A URL that checks the server's certificate against the test authority, or
        against ``sslrootcert``."""
        root = sslrootcert or self.ca.cert_path
        return (
            f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
            f"?sslmode=verify-full&sslrootcert={root}"
        )

    def new_storage_url(self) -> str:
        """The URL of a new empty schema: a storage of its own for each test, at a fraction
        of the cost of a database (which copies a template of several megabytes)."""
        schema = f"t{next(self._counter)}"
        self._admin.execute(f"CREATE SCHEMA {schema}")
        return with_schema(self.url(), schema)

    def as_new_role(self, url: str, role: str, *privileges: str) -> str:
        """``url`` as a new login role, given USAGE on the URL's schema and ``privileges``
        (``SELECT ON ALL TABLES``, ``CREATE ON SCHEMA``...), each granted in that schema."""
        schema = conninfo_to_dict(url)["options"].removeprefix("-csearch_path=")
        self._admin.execute(f"CREATE ROLE {role} LOGIN")
        self._admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        for privilege in privileges:
            self._admin.execute(f"GRANT {privilege} {schema} TO {role}")
        return url.replace("postgresql://postgres@", f"postgresql://{role}@")

    def stop(self) -> None:
        self._admin.close()
        try:
            if self.running:
                self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
