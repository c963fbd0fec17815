"""The PostgreSQL driver's own promises: one sequencer for every process, URLs without
passwords, errors that quote nothing, and a connection that comes back."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from deadline import within
from pg import HostDatabase, schema_of, stored_bytes
from pgserver import ADMIN, Cluster
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from coffre.cli.main import app
from coffre.exceptions import StorageError
from coffre.service import Vault
from coffre.storage import SealedVersion, postgres
from coffre.storage.base import SealedEvent
from coffre.storage.copy import open_endpoint
from coffre.storage.postgres import SCHEMA_MARK, PostgresStorage, _conninfo, check_url

WRITERS = 4
WRITES_EACH = 25


@pytest.fixture
def url(postgres: Cluster) -> str:
    return postgres.new_storage_url()


@pytest.fixture
def storage(url: str) -> Iterator[PostgresStorage]:
    opened = PostgresStorage(url, create=True)
    yield opened
    opened.close()


def _version(loc: bytes, number: int) -> SealedVersion:
    return SealedVersion(loc, number, b"k", b"c", number, False, b"body")


def _on(url: str, sql: str) -> list[tuple[object, ...]]:
    """One statement on the storage's database, as its host runs it; its rows, if any."""
    with HostDatabase(url) as db:
        cursor = db.execute(sql)
        return list(cursor.fetchall()) if cursor.description else []


def _has_index(url: str, name: str) -> bool:
    return _on(url, f"SELECT to_regclass('{name}') IS NOT NULL") == [(True,)]


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "made-by-an-earlier-coffre"])
def test_opening_a_storage_waits_for_the_write_under_way(
    storage: PostgresStorage, url: str, marked: bool
) -> None:
    """An opening that runs the schema's CREATE ... IF NOT EXISTS (a storage not yet marked
    as this Coffre's) locks each table even when it exists: an opening (a worker starting,
    `coffre keys list`) that had locked `versions` waited for a write holding
    `audit_events`, which then waited for `versions`: PostgreSQL broke the deadlock by
    failing one of them (40P01), a command or a client's write (a lifecycle probe's
    finding). A marked storage's opening takes no lock at all."""
    if not marked:
        _on(url, "COMMENT ON TABLE coffre_meta IS NULL")
    holding, failures = threading.Event(), []

    def write() -> None:
        try:
            with storage.transaction() as txn:
                txn.append_events([SealedEvent(b"d" * 32, b"c" * 16, 0, b"event")])
                txn.leaf_count()  # a round trip: the insert has reached the server
                holding.set()
                time.sleep(1)  # the opening meanwhile locks all it can
                txn.append(_version(b"l" * 32, 1), [])
        except Exception as error:
            failures.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    assert holding.wait(10)
    try:
        PostgresStorage(url).close()
    except StorageError as error:
        failures.append(error)
    writer.join()
    assert failures == []
    assert storage.latest(b"l" * 32) is not None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://coffre:secret@db/coffre",
        "postgresql://coffre@db/coffre?password=secret",
        "sqlite:///vault.sqlite",
        "postgresql://db/coffre?no_such_parameter=1",
    ],
)
def test_a_url_with_a_password_or_not_postgresql_is_refused(url: str) -> None:
    with pytest.raises(StorageError) as refused:
        check_url(url)
    assert "secret" not in str(refused.value)


def test_an_empty_database_is_not_a_storage_and_a_storage_is_not_created_twice(url: str) -> None:
    with pytest.raises(StorageError, match="holds no Coffre storage"):
        PostgresStorage(url)
    PostgresStorage(url, create=True).close()
    with pytest.raises(StorageError, match="already holds"):
        PostgresStorage(url, create=True)
    PostgresStorage(url).close()


def test_a_storage_marked_as_this_coffre_s_opens_without_running_its_schema(url: str) -> None:
    """Each server process opens the storage as it starts: once the tables are marked as
    this Coffre's, it reads the mark instead of running the schema's statements and taking
    their locks. A storage without the mark (an earlier Coffre's) has its tables brought
    up to date, then is marked."""
    PostgresStorage(url, create=True).close()
    _on(url, "DROP INDEX tokens_by_loc")
    PostgresStorage(url).close()
    assert not _has_index(url, "tokens_by_loc")  # marked: opened as it is
    _on(url, "COMMENT ON TABLE coffre_meta IS NULL")
    PostgresStorage(url).close()
    assert _has_index(url, "tokens_by_loc")
    mark = _on(url, "SELECT obj_description('coffre_meta'::regclass, 'pg_class')")
    assert mark == [(SCHEMA_MARK,)]


def test_a_role_that_may_only_read_the_tables_is_not_ready(url: str, postgres: Cluster) -> None:
    """Every request writes (a read is logged): a role granted SELECT alone passed the
    readiness check, then every request was a 503 "try again shortly"."""
    PostgresStorage(url, create=True).close()
    role = f"looker_{schema_of(url)}"
    storage = PostgresStorage(postgres.as_new_role(url, role, "SELECT ON ALL TABLES IN SCHEMA"))
    try:
        with pytest.raises(StorageError, match=f"role {role} may not add rows to .*leaves"):
            storage.check_writable()
    finally:
        storage.close()
    with closing(PostgresStorage(url)) as owned:
        owned.check_writable()  # its owner may


def test_a_copy_into_a_schema_its_role_may_not_create_tables_in_says_what_to_grant(
    url: str, postgres: Cluster, tmp_path: Path
) -> None:
    """As coffre init says it: "could not change the schema (InsufficientPrivilege)" left
    the operator to find the GRANT."""
    schema = schema_of(url)
    role = f"copier_{schema}"
    with pytest.raises(StorageError, match=f"GRANT CREATE ON SCHEMA {schema} TO {role}"):
        open_endpoint(postgres.as_new_role(url, role), copy_of=url)


def test_a_database_that_cannot_be_reached_is_a_storage_error(postgres: Cluster) -> None:
    with pytest.raises(StorageError, match="cannot connect"):
        PostgresStorage(postgres.url("no_such_database"))


def test_writers_of_several_processes_take_turns_on_the_log(url: str) -> None:
    """Each writer stands for a server process (a storage of its own): each transaction
    reads the log's end and the record's version, then appends after them. Without the
    sequencer two would read the same end and one would fail."""
    PostgresStorage(url, create=True).close()
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        storage = PostgresStorage(url)
        try:
            for _ in range(WRITES_EACH):
                with storage.transaction() as txn:
                    latest = txn.latest(b"shared")
                    number = latest.version + 1 if latest else 1
                    txn.append(_version(b"shared", number), [b"w%d" % writer])
                    txn.append_leaves(txn.leaf_count(), [b"leaf of %d" % writer])
        except BaseException as error:
            failures.append(error)
        finally:
            storage.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    storage = PostgresStorage(url)
    try:
        total = WRITERS * WRITES_EACH
        assert storage.leaf_count() == total and len(storage.leaves(0, total)) == total
        latest = storage.latest(b"shared")
        assert latest is not None and latest.version == total
    finally:
        storage.close()


def test_errors_name_no_value(storage: PostgresStorage) -> None:
    loc = b"a-telling-location"
    with storage.transaction() as txn:
        txn.append(_version(loc, 1), [])
    with pytest.raises(StorageError) as refused, storage.transaction() as txn:
        txn.append(_version(loc, 1), [])
    message = str(refused.value)
    assert "UniqueViolation" in message
    assert "telling" not in message and loc.hex() not in message
    assert storage.last_seq() == 1


def test_an_erasure_s_purge_gives_up_on_a_transaction_holding_the_keys(
    storage: PostgresStorage, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued behind a long transaction, VACUUM FULL would hold up every later read of
    the data keys with it: it waits PURGE_LOCK_SECONDS, then says what holds it up, and
    runs once that transaction has ended."""
    monkeypatch.setattr(postgres, "PURGE_LOCK_SECONDS", 0.5)
    with HostDatabase(url) as report:
        report.execute("SELECT count(*) FROM data_keys")  # its transaction stays open
        with (
            within(60),
            pytest.raises(StorageError, match="held a table of 'VACUUM FULL data_keys'"),
        ):
            storage.purge_erased()
    storage.purge_erased()


def test_a_failed_savepoint_undoes_only_itself(storage: PostgresStorage) -> None:
    with storage.transaction() as txn:
        txn.append(_version(b"a", 1), [])
        with pytest.raises(StorageError), txn.savepoint():
            txn.append(_version(b"b", 1), [])
            txn.append(_version(b"a", 1), [])  # a duplicate: the transaction would abort
        txn.append(_version(b"a", 2), [])
    assert storage.latest(b"b") is None
    latest = storage.latest(b"a")
    assert latest is not None and latest.version == 2


def test_statements_keep_working_after_a_savepoint_undone_by_the_caller(
    storage: PostgresStorage,
) -> None:
    """A request that fails in Python undoes its savepoint; the statements the transaction
    sends next, and those of the next transaction, still run (a rollback makes the driver
    drop its prepared statements, which must not take the next ones with them)."""
    for round_number in range(1, 4):
        with storage.transaction() as txn:
            with txn.savepoint():
                txn.append(_version(b"kept", 2 * round_number - 1), [b"t"])
            start = txn.leaf_count()
            with pytest.raises(ValueError), txn.savepoint():
                txn.append(_version(b"undone", round_number), [b"t"])
                txn.append_leaves(start, [b"undone leaf"])
                raise ValueError("the request failed")
            assert txn.leaf_count() == start
            txn.append(_version(b"kept", 2 * round_number), [b"t"])
            txn.append_leaves(start, [b"kept leaf"])
            assert txn.latest(b"kept") is not None
    assert storage.latest(b"undone") is None and storage.leaf_count() == 3
    latest = storage.latest(b"kept")
    assert latest is not None and latest.version == 6


def test_a_savepoint_whose_connection_died_leaves_the_log_count_as_it_was(
    storage: PostgresStorage, url: str
) -> None:
    """The rollback of a failed request's savepoint fails too when the server has ended the
    connection: the transaction's count of the log must still leave that request's leaves
    out, or the group commit's other requests took the log for one the host altered (a
    500, and an integrity failure logged for good), where the storage was only away."""
    with pytest.raises(StorageError), storage.transaction() as txn:
        start = txn.leaf_count()
        txn.append_leaves(start, [b"an earlier request's leaf"])
        with pytest.raises(StorageError), txn.savepoint():
            txn.append_leaves(start + 1, [b"this request's leaf"])
            txn.sync()
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", (txn._db.info.backend_pid,))
            raise ValueError("the request failed")
        assert txn.leaf_count() == start + 1
    assert storage.leaf_count() == 0  # nothing was committed, and the storage goes on
    with storage.transaction() as txn:
        txn.append_leaves(0, [b"the next transaction's leaf"])
    assert storage.leaf_count() == 1


def test_a_write_connection_the_server_dropped_is_replaced_before_it_is_used(
    storage: PostgresStorage, url: str
) -> None:
    with storage.transaction() as txn:
        txn.append(_version(b"a", 1), [])
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(  # each waited for until it is gone, its goodbye sent
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name <> %s",
            (ADMIN,),
        )
    with storage.transaction() as txn:
        txn.append(_version(b"a", 2), [])
    latest = storage.latest(b"a")  # the pool replaced its connections too
    assert latest is not None and latest.version == 2


SELECT_LIMIT = 1024
"""FD_SETSIZE: select() takes no file descriptor from this number on."""


def test_a_write_connection_past_descriptor_1023_is_checked_before_each_write(url: str) -> None:
    """A process serving a thousand clients (a socket each) opens a new write connection,
    the server having dropped the last, past descriptor 1023: the check that it is still
    alive before each write must take it, or every write fails (a 500 each, until the
    process restarts). Here the storage is opened in such a process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= SELECT_LIMIT + 64:
        pytest.skip(f"this process may open {hard} files, not enough to pass {SELECT_LIMIT}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, SELECT_LIMIT + 64), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < SELECT_LIMIT:  # the clients' sockets, as it were
            held.append(os.open(os.devnull, os.O_RDONLY))
        os.close(held.pop())  # the lowest free descriptor is now past the limit
        with closing(PostgresStorage(url, create=True)) as storage:
            assert storage._write_db.fileno() >= SELECT_LIMIT
            for number in (1, 2):
                with storage.transaction() as txn:
                    txn.append(_version(b"a", number), [])
            latest = storage.latest(b"a")
    finally:
        for descriptor in held:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert latest is not None and latest.version == 2


def test_a_stream_abandoned_halfway_leaves_the_reads_working(storage: PostgresStorage) -> None:
    with storage.transaction() as txn:
        for number in range(1, 600):
            txn.append(_version(b"r%d" % number, 1), [])
    reading = storage.current_of_kind(b"k")
    assert next(reading).loc == b"r1"
    reading.close()
    assert len(list(storage.current_of_kind(b"k"))) == 599


def test_the_dump_that_leak_tests_scan_shows_stored_bytes_as_they_are(
    url: str, tmp_path: Path
) -> None:
    """The scan's own check: bytes stored in a bytea column are found in the dump."""
    vault = Vault.at(tmp_path / "vault")
    vault.create(url)
    storage = vault.open_storage()
    with storage.transaction() as txn:
        txn.append(
            SealedVersion(b"\x00Bouchard", 1, b"k", b"c", 1, False, "\xffAurélie".encode()),
            [b"1984-02-29"],
        )
    storage.close()
    stored = stored_bytes(vault)
    for needle in (b"\x00Bouchard", "\xffAurélie".encode(), b"1984-02-29"):
        assert needle in stored, needle


def test_coffre_init_records_the_url_and_every_command_opens_it(url: str, tmp_path: Path) -> None:
    folder = tmp_path / "v"
    result = CliRunner().invoke(app, ["init", str(folder), "--storage", url])
    assert result.exit_code == 0, result.output
    assert not (folder / "storage.sqlite").exists()
    recorded = folder / "storage.url"
    assert recorded.read_text().strip() == url and recorded.stat().st_mode & 0o077 == 0
    records = Vault.at(folder).open()
    try:
        with records.writer() as writer:
            writer.update("Patient", "p1", {"resourceType": "Patient", "id": "p1"})
        assert records.read("Patient", "p1").version == 1
    finally:
        records.storage.close()
    again = CliRunner().invoke(app, ["init", str(folder), "--storage", url])
    assert again.exit_code == 1 and "already exists" in again.output


def test_coffre_init_refuses_a_url_with_a_password(postgres: Cluster, tmp_path: Path) -> None:
    with_password = postgres.url().replace("postgres@", "postgres:secret@")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "v"), "--storage", with_password])
    assert result.exit_code == 1 and "PGPASSFILE" in result.output
    assert "secret" not in result.output
    assert not (tmp_path / "v").exists()


def test_connections_give_up_on_a_database_host_that_vanished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unacknowledged data and silent idle connections fail within the timeouts Coffre
    adds (a vanished host held a statement, and every write behind it, for about 15
    minutes); what the URL or PGCONNECT_TIMEOUT says wins."""
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    given = conninfo_to_dict(_conninfo("postgresql://coffre@db/coffre?sslmode=verify-full"))
    assert given == {
        "user": "coffre",
        "host": "db",
        "dbname": "coffre",
        "sslmode": "verify-full",
        "connect_timeout": "10",
        "tcp_user_timeout": "30000",
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
    }
    own = conninfo_to_dict(_conninfo("postgresql://db/c?tcp_user_timeout=5000&keepalives=0"))
    assert own["tcp_user_timeout"] == "5000" and own["keepalives"] == "0"
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")
    assert "connect_timeout" not in conninfo_to_dict(_conninfo("postgresql://db/c"))
