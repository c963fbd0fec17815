"""Both drivers, SQLite and PostgreSQL: versions, current pointers, tokens, keys,
history, atomicity."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import HostDatabase

from coffre.exceptions import StorageError, StorageFullError
from coffre.storage import HistoryQuery, SealedVersion, SqliteStorage, Storage
from coffre.storage.base import TOKEN_BYTES
from coffre.storage.postgres import PostgresStorage


def tok(name: bytes) -> bytes:
    """An index token, as long as every token is."""
    return name.ljust(TOKEN_BYTES, b".")


def version(
    loc: bytes, number: int, *, kind: bytes = b"k", deleted: bool = False, ts: int = 0
) -> SealedVersion:
    return SealedVersion(loc, number, kind, b"c" * 32, ts or number, deleted, b"body%d" % number)


@pytest.fixture
def location(tmp_path: Path, storage_url: str) -> str | Path:
    return storage_url or tmp_path / "s.sqlite"


@pytest.fixture
def storage(location: str | Path) -> Iterator[Storage]:
    opened: Storage = (
        SqliteStorage(location, create=True)
        if isinstance(location, Path)
        else PostgresStorage(location, create=True)
    )
    yield opened
    opened.close()


def test_latest_and_each_version_are_kept(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"t1")])
        txn.append(version(b"a", 2), [tok(b"t2")])
    latest = storage.latest(b"a")
    assert latest is not None and latest.version == 2 and latest.body == b"body2"
    first = storage.version(b"a", 1)
    assert first is not None and first.body == b"body1"
    assert storage.latest(b"missing") is None


def test_tokens_follow_the_current_version_only(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"old")])
        txn.append(version(b"a", 2), [tok(b"new")])
    assert storage.find([tok(b"old")]) == []
    assert storage.find([tok(b"new")]) == [b"a"]
    with storage.transaction() as txn:
        txn.append(version(b"a", 3, deleted=True), [])
    assert storage.find([tok(b"new")]) == []
    assert list(storage.current_of_kind(b"k")) == []


def test_find_gives_each_location_once_in_order_a_page_at_a_time(storage: Storage) -> None:
    # More tokens than one compound SELECT of the SQLite driver looks up.
    tokens = [tok(b"t%03d" % n) for n in range(300)]
    locs = [bytes([n]) * 4 for n in range(40, 0, -1)]
    with storage.transaction() as txn:
        for n, loc in enumerate(locs):
            txn.append(version(loc, 1), tokens[n::40])
            assert txn.find([tokens[n]]) == [loc]  # a transaction sees its own writes
    every = sorted(locs)
    assert storage.find(tokens) == every
    assert storage.find(tokens[:1] + tokens[-1:]) == sorted({locs[0], locs[299 % 40]})
    assert storage.find(tokens, limit=7) == every[:7]
    assert storage.find(tokens, after=every[6], limit=7) == every[7:14]
    assert storage.find(tokens, after=every[-1]) == []
    assert storage.find([]) == [] and storage.find([tok(b"none")], limit=3) == []


def test_versions_and_tokens_of_many_records_in_one_read(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"z"), tok(b"m")])
        txn.append(version(b"a", 2), [tok(b"z"), tok(b"b"), tok(b"q")])
        txn.append(version(b"b", 1), [tok(b"k")])
    wanted = [b"a", b"b", b"missing"]
    assert storage.latest_each(wanted) == {b"a": storage.latest(b"a"), b"b": storage.latest(b"b")}
    assert storage.latest_each([]) == {}
    # In token order, as index_digest joins them.
    assert storage.joined_tokens(wanted) == {
        b"a": tok(b"b") + tok(b"q") + tok(b"z"),
        b"b": tok(b"k"),
    }
    assert storage.joined_tokens([]) == {}
    assert storage.carrying([tok(b"q"), tok(b"k"), tok(b"m")], wanted) == {b"a", b"b"}
    assert storage.carrying([tok(b"m")], wanted) == set()  # a token of a former version
    assert storage.carrying([tok(b"k")], [b"a"]) == set() and storage.carrying([], wanted) == set()


def test_the_kinds_present_are_those_of_current_records_not_deleted(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append(version(b"a", 1, kind=b"obs"), [])
        txn.append(version(b"b", 1, kind=b"enc"), [])
        txn.append(version(b"b", 2, kind=b"enc", deleted=True), [])
        txn.append(version(b"c", 1, kind=b"enc"), [])
    wanted = [b"obs", b"enc", b"absent"]
    assert storage.kinds_present(wanted) == {b"obs", b"enc"}
    with storage.transaction() as txn:
        txn.append(version(b"c", 2, kind=b"enc", deleted=True), [])
    assert storage.kinds_present(wanted) == {b"obs"}
    assert storage.kinds_present([]) == set()


def test_a_new_version_keeps_the_tokens_it_shares_and_drops_the_others(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"kept"), tok(b"dropped"), tok(b"also kept")])
        txn.append(version(b"b", 1), [tok(b"dropped")])
    with storage.transaction() as txn:
        txn.append(
            version(b"a", 2), [tok(b"kept"), tok(b"added"), tok(b"also kept"), tok(b"added")]
        )
    assert sorted(storage.tokens_of(b"a")) == [tok(b"added"), tok(b"also kept"), tok(b"kept")]
    assert storage.find([tok(b"dropped")]) == [b"b"]
    assert storage.find([tok(b"added")]) == [b"a"]


def test_a_meta_value_is_recorded_once_and_the_first_kept(storage: Storage) -> None:
    """Two gateway processes making a key at once keep the first one's."""
    assert storage.meta("a name") is None
    with storage.transaction() as txn:
        assert txn.put_meta("a name", "first") == "first"
    with storage.transaction() as txn:
        assert txn.put_meta("a name", "second") == "first"
    assert storage.meta("a name") == "first"


def test_a_failed_transaction_leaves_nothing(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"t")])
        txn.put_wrapped_key(b"c", "kek-1", b"w")
        raise RuntimeError("interrupted")
    assert storage.latest(b"a") is None
    assert storage.find([tok(b"t")]) == []
    assert storage.wrapped_key(b"c") is None
    assert storage.last_seq() == 0


def test_an_undone_savepoint_keeps_the_index_changes_made_before_it(storage: Storage) -> None:
    """A search inside a savepoint writes out the index changes made so far, those from
    before the savepoint included; undoing the savepoint must not lose them."""
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"before")])
        with pytest.raises(ValueError), txn.savepoint():
            txn.append(version(b"b", 1), [tok(b"inside")])
            assert txn.find([tok(b"before"), tok(b"inside")]) == [b"a", b"b"]
            raise ValueError("the request fails")
        assert txn.find([tok(b"before")]) == [b"a"]
        txn.append(version(b"a", 2), [tok(b"after")])
        with txn.savepoint():
            txn.append(version(b"c", 1), [tok(b"kept")])
    assert storage.find([tok(b"before")]) == []
    assert storage.find([tok(b"inside")]) == []
    assert storage.find([tok(b"after"), tok(b"kept")]) == [b"a", b"c"]


def test_the_index_rebuilt_finds_what_it_found_and_takes_writes(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"shared"), tok(b"a")])
        txn.append(version(b"b", 1), [tok(b"shared"), tok(b"b")])
    storage.rebuild_index()
    assert storage.find([tok(b"shared")]) == [b"a", b"b"]
    assert storage.find([tok(b"b")]) == [b"b"]
    with storage.transaction() as txn:
        txn.append(version(b"c", 1), [tok(b"shared")])
    assert storage.find([tok(b"shared")]) == [b"a", b"b", b"c"]


def test_the_log_length_follows_appends_and_undone_savepoints(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append_leaves(0, [b"l0", b"l1"])
        assert txn.leaf_count() == 2
        with pytest.raises(ValueError), txn.savepoint():
            txn.append_leaves(2, [b"undone"])
            assert txn.leaf_count() == 3
            raise ValueError("the request fails")
        assert txn.leaf_count() == 2
        txn.append_leaves(2, [b"l2"])
    assert storage.leaf_count() == 3
    with storage.transaction() as txn:
        assert txn.leaf_count() == 3


def test_a_version_number_cannot_be_written_twice(storage: Storage) -> None:
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [])
    with pytest.raises(Exception), storage.transaction() as txn:  # noqa: B017 - sqlite3's, or StorageError
        txn.append(version(b"a", 1), [])
    assert storage.last_seq() == 1


def test_the_first_wrapped_key_stays(storage: Storage) -> None:
    with storage.transaction() as txn:
        assert txn.put_wrapped_key(b"c", "kek-1", b"first") == ("kek-1", b"first")
        assert txn.put_wrapped_key(b"c", "kek-1", b"second") == ("kek-1", b"first")


def test_history_pages_newest_first_within_a_snapshot(storage: Storage) -> None:
    with storage.transaction() as txn:
        for number in range(1, 6):
            txn.append(version(b"a", number, ts=number * 10), [])
    snapshot = storage.last_seq()
    with storage.transaction() as txn:
        txn.append(version(b"a", 6, ts=60), [])
    page = storage.history(HistoryQuery(loc=b"a", before_seq=snapshot, limit=2, offset=2))
    assert [v.version for v in page] == [3, 2]
    assert storage.count_history(HistoryQuery(loc=b"a", since_ts=30)) == 4
    assert storage.count_history(HistoryQuery(kind=b"other")) == 0


def test_a_read_sees_a_commit_made_while_another_thread_is_reading(storage: Storage) -> None:
    """A server reads in several threads (requests, exports): a read must see every write
    committed before it began, even while another thread is in the middle of a read that
    began earlier."""
    with storage.transaction() as txn:
        for loc in (b"a", b"b", b"c"):
            txn.append(version(loc, 1), [])
    midway, finish = threading.Event(), threading.Event()

    def read_slowly() -> None:
        rows = storage.current_of_kind(b"k")
        next(rows)
        midway.set()
        finish.wait(10)
        list(rows)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    try:
        assert midway.wait(10)
        with storage.transaction() as txn:
            txn.append(version(b"a", 2), [])
        latest = storage.latest(b"a")
        assert latest is not None and latest.version == 2
    finally:
        finish.set()
        reader.join()


def test_a_missing_file_is_not_created_by_accident(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        SqliteStorage(tmp_path / "absent.sqlite")
    assert not (tmp_path / "absent.sqlite").exists()


def test_leaves_and_nodes_by_range_refuse_a_gap(storage: Storage, location: str | Path) -> None:
    with storage.transaction() as txn:
        txn.append_leaves(0, [b"l0", b"l1", b"l2", b"l3"])
        txn.put_nodes([(1, i, b"n%d" % i) for i in range(4)])
    assert storage.leaves(1, 3) == [b"l1", b"l2"]
    assert storage.leaves(2, 10) == [b"l2", b"l3"]  # fewer at the end
    assert storage.nodes(1, 1, 3) == [b"n1", b"n2"]
    assert storage.nodes(1, 3, 10) == [b"n3"]
    assert storage.nodes(2, 0, 4) == []
    with HostDatabase(location) as host:
        host.execute("DELETE FROM leaves WHERE idx = 1")
        host.execute("DELETE FROM tree_nodes WHERE level = 1 AND idx = 2")
    with pytest.raises(StorageError, match="gap between leaves 0 and 4"):
        storage.leaves(0, 4)
    assert storage.leaves(2, 4) == [b"l2", b"l3"]
    assert storage.leaves(0, 2) == [b"l0"], "within the range, as the end of the log"
    with pytest.raises(StorageError, match="gap at level 1"):
        storage.nodes(1, 1, 4)
    assert storage.nodes(1, 0, 2) == [b"n0", b"n1"]


def _temporary_files() -> list[str]:
    """SQLite's temporary files this process holds open (unlinked, named etilqs_...)."""
    found = []
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{descriptor}")
            if "etilqs_" in target:
                found.append(target)
    return found


def test_savepoints_keep_their_journal_in_memory(tmp_path: Path) -> None:
    """A group commit runs each request in a savepoint: SQLite would write each one's
    journal to a temporary file in /var/tmp, made and unlinked a few times a transaction."""
    storage = SqliteStorage(tmp_path / "s.sqlite", create=True)
    held = []
    with storage.transaction() as txn:
        for request in range(5):
            with txn.savepoint():
                for n in range(30):
                    loc = hashlib.sha256(b"%d-%d" % (request, n)).digest()
                    txn.append(version(loc, 1), [tok(b"t%d" % t) for t in range(50)])
                held += _temporary_files()
    assert held == []
    storage.close()


def test_a_full_disk_is_a_storage_error_and_the_write_is_undone(tmp_path: Path) -> None:
    """SQLite's 'database or disk is full' came out as itself, then 'cannot rollback - no
    transaction is active' on top: two tracebacks instead of one StorageError."""
    storage = SqliteStorage(tmp_path / "s.sqlite", create=True)
    try:
        pages = storage._write_db.execute("PRAGMA page_count").fetchone()[0]
        storage._write_db.execute(f"PRAGMA max_page_count = {pages}")  # a full disk
        big = SealedVersion(b"l" * 32, 1, b"k", b"c" * 32, 1, False, os.urandom(200_000))
        full = "SQLite could not write: database or disk is full"
        with pytest.raises(StorageError, match=full), storage.transaction() as txn:
            txn.append(big, [])
        storage._write_db.execute("PRAGMA max_page_count = 1073741823")
        with storage.transaction() as txn:
            txn.append(big, [])
        assert storage.latest(b"l" * 32) is not None
    finally:
        storage.close()


def test_a_full_disk_that_undoes_one_statement_is_still_a_full_disk(tmp_path: Path) -> None:
    """SQLite may roll back only the statement that found the disk full, the transaction
    alive: the request must still hear of a full disk (a 503 to retry later), not a raw
    sqlite3.Error (a 500), and what the transaction wrote before it stands."""
    storage = SqliteStorage(tmp_path / "s.sqlite", create=True)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    with storage.transaction() as txn:
        txn.append(version(b"a" * 32, 1), [tok(b"t")])
        with pytest.raises(StorageFullError, match="disk is full"), txn.savepoint():
            txn.append(version(b"b" * 32, 1), [tok(b"t")])
            raise full
    assert storage.latest(b"a" * 32) is not None
    assert storage.latest(b"b" * 32) is None
    storage.close()


@pytest.mark.parametrize("mishap", ["wal deleted", "file replaced", "file moved"])
def test_a_storage_file_or_wal_gone_from_under_the_server_takes_no_write(
    tmp_path: Path, mishap: str
) -> None:
    """SQLite goes on writing to the files it opened: the writes it would acknowledge
    then are lost with them at the next start."""
    path = tmp_path / "s.sqlite"
    storage = SqliteStorage(path, create=True)
    with storage.transaction() as txn:
        txn.append(version(b"a" * 32, 1), [tok(b"t")])
    storage.check_writable()
    if mishap == "wal deleted":
        Path(f"{path}-wal").unlink()
    elif mishap == "file replaced":
        other = SqliteStorage(tmp_path / "other.sqlite", create=True)
        other.close()
        (tmp_path / "other.sqlite").replace(path)
    else:
        path.rename(tmp_path / "elsewhere.sqlite")
    refused = "deleted, moved or replaced while this server had it open"
    with pytest.raises(StorageError, match=refused), storage.transaction() as txn:
        txn.append(version(b"b" * 32, 1), [tok(b"t")])
    with pytest.raises(StorageError, match=refused):
        storage.check_writable()
    storage.close()
