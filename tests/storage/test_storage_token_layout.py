"""SQLite's token layout (coffre.storage.sqlite): token sets under ids that sort as their
locations, indexed by FTS5, and the ``tokens`` table beside them for the records of an
older vault and those whose id another location has."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing, suppress
from pathlib import Path

import pytest
from fts5 import index_runs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import HostDatabase
from test_storage_sqlite import tok, version

from coffre.exceptions import IndexDamagedError
from coffre.storage import SqliteStorage
from coffre.storage import sqlite as sqlite_layout

PREFIX = b"8 bytes!"
"""The first 8 bytes of locations whose token sets would share an id."""


def test_locations_sharing_their_first_eight_bytes_are_found_in_order(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "s.sqlite", create=True)
    locs = [PREFIX + b"\x02", PREFIX + b"\x01", PREFIX + b"\x03", PREFIX[:7] + b"\x00"]
    with storage.transaction() as txn:
        for n, loc in enumerate(locs):
            txn.append(version(loc, 1), [tok(b"shared"), tok(b"own%d" % n)])
    with closing(sqlite3.connect(storage.path)) as db:  # the second and third: no id left
        assert db.execute("SELECT count(DISTINCT loc) FROM tokens").fetchone() == (2,)
    every = sorted(locs)
    assert storage.find([tok(b"shared")]) == every
    for cut in range(len(every)):
        assert storage.find([tok(b"shared")], after=every[cut], limit=2) == every[cut + 1 :][:2]
    assert storage.find([tok(b"own1"), tok(b"own2")]) == sorted(locs[1:3])
    assert storage.joined_tokens(locs[:2]) == {
        loc: tok(b"own%d" % n) + tok(b"shared") for n, loc in enumerate(locs[:2])
    }
    assert storage.carrying([tok(b"own0")], locs) == {locs[0]}
    with storage.transaction() as txn:  # the first one's set goes; the others stay
        txn.append(version(locs[0], 2, deleted=True), [])
        txn.append(version(locs[2], 2), [tok(b"moved")])
    assert storage.find([tok(b"shared")]) == sorted(set(every) - {locs[0], locs[2]})
    assert storage.find([tok(b"moved")]) == [locs[2]]
    assert storage.tokens_of(locs[0]) == [] and storage.tokens_of(locs[2]) == [tok(b"moved")]
    storage.close()


def _to_rows_per_token(path: Path) -> None:
    """Move every token set into the ``tokens`` table, and drop the token sets' tables: a
    vault as Coffre wrote it before token sets."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "WITH RECURSIVE n(at) AS (SELECT 1 UNION ALL SELECT at + 10 FROM n WHERE at < 990)"
            " INSERT INTO tokens (token, loc) SELECT substr(s.tokens, n.at, 10), s.loc"
            " FROM token_sets s JOIN n ON n.at < length(s.tokens)"
        )
        db.execute("DROP TABLE token_sets")
        db.execute("DROP TABLE token_index")


def test_a_vault_written_before_token_sets_is_read_and_moves_on_its_next_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    storage = SqliteStorage(path, create=True)
    with storage.transaction() as txn:
        txn.append(version(b"a", 1), [tok(b"z"), tok(b"m")])
        txn.append(version(b"b", 1), [tok(b"m")])
    storage.close()
    _to_rows_per_token(path)
    storage = SqliteStorage(path)
    assert storage.find([tok(b"m")]) == [b"a", b"b"]
    assert storage.joined_tokens([b"a"]) == {b"a": tok(b"m") + tok(b"z")}
    with storage.transaction() as txn:
        txn.append(version(b"a", 2), [tok(b"z"), tok(b"n")])
    assert storage.find([tok(b"m"), tok(b"n")]) == [b"a", b"b"]
    assert storage.find([tok(b"m")]) == [b"b"]
    assert storage.tokens_of(b"a") == [tok(b"n"), tok(b"z")]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT DISTINCT loc FROM tokens").fetchall() == [(b"b",)]
        assert db.execute("SELECT loc FROM token_sets").fetchall() == [(b"a",)]
    storage.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 30), st.frozensets(st.integers(0, 9), max_size=4))),
        min_size=1,
        max_size=12,
    )
)
def test_what_the_index_finds_follows_every_write_through_its_merges(
    tmp_path_factory: pytest.TempPathFactory, transactions: list[list[tuple[int, frozenset[int]]]]
) -> None:
    """Transactions of writes (a record given a set of tokens, none: deleted), each run
    of the FTS5 index merged as writes go, and consolidated by steps between some of
    them: every look-up finds what the last writes say, before and after consolidation."""
    storage = SqliteStorage(tmp_path_factory.mktemp("merges") / "s.sqlite", create=True)
    held: dict[bytes, frozenset[int]] = {}
    versions: dict[bytes, int] = {}

    def check() -> None:
        for token in range(10):
            expected = sorted(loc for loc, tokens in held.items() if token in tokens)
            assert storage.find([tok(b"%d" % token)]) == expected

    for number, writes in enumerate(transactions):
        with storage.transaction() as txn:
            for record, tokens in writes:
                loc = hashlib.sha256(b"%d" % record).digest()
                versions[loc] = versions.get(loc, 0) + 1
                txn.append(version(loc, versions[loc]), [tok(b"%d" % t) for t in tokens])
                held[loc] = tokens
        if number % 3 == 2:
            storage.consolidate_index(1)  # a step: writes come between the next ones
    check()
    while storage.consolidate_index(1):
        pass
    check()
    storage.close()


def test_the_index_is_consolidated_by_steps_until_nothing_is_left_to_merge(
    tmp_path: Path,
) -> None:
    storage = SqliteStorage(tmp_path / "s.sqlite", create=True)
    locs = [hashlib.sha256(b"%d" % n).digest() for n in range(40)]
    for n, loc in enumerate(locs):  # a transaction each: runs on two levels (40 = 0b101000)
        with storage.transaction() as txn:
            txn.append(version(loc, 1), [tok(b"all"), tok(b"r%d" % (n % 3))])
    assert index_runs(storage.path) == 2
    steps = 0
    while storage.consolidate_index(1):
        steps += 1
        assert steps < 1000
    assert index_runs(storage.path) == 1
    assert not storage.consolidate_index(1000)  # nothing more to do
    assert storage.find([tok(b"all")]) == sorted(locs)
    assert storage.find([tok(b"r1")]) == sorted(locs[1::3])
    with closing(sqlite3.connect(storage.path)) as db:
        db.execute("INSERT INTO token_index (token_index) VALUES ('integrity-check')")
    storage.close()


@given(st.binary(max_size=400))
def test_a_token_sets_terms_are_its_tokens_spelt_one_by_one(joined: bytes) -> None:
    """The FTS5 terms of a token set, spelt in one pass, are those of its tokens spelt
    one at a time (a trailing piece shorter than a token, which only a host writes, too),
    each letter in U+0100-U+01FF."""
    terms = sqlite_layout._terms(joined)
    assert terms == " ".join(map(sqlite_layout._term, sqlite_layout._split(joined)))
    assert all(0x100 <= ord(letter) <= 0x1FF for letter in terms.replace(" ", ""))


def _write(storage: SqliteStorage, records: dict[bytes, list[bytes]]) -> None:
    with storage.transaction() as txn:
        for loc, tokens in records.items():
            txn.append(version(loc, 1), tokens)


INDEX_DAMAGE = {
    "zero its structure record": [
        "UPDATE token_index_data SET block = zeroblob(length(block)) WHERE id = 10"
    ],
    "garble its structure record": [
        "UPDATE token_index_data SET block = randomblob(length(block)) WHERE id = 10"
    ],
    "delete its structure record": ["DELETE FROM token_index_data WHERE id = 10"],
    "delete its configuration": ["DELETE FROM token_index_config"],
    "drop one of its tables": ["DROP TABLE token_index_idx"],
}


@pytest.mark.parametrize("damage", INDEX_DAMAGE)
def test_a_damaged_index_opens_refuses_writes_as_damaged_and_is_rebuilt(
    tmp_path: Path, damage: str
) -> None:
    """Whatever the host did to the FTS5 index's tables, the storage still opens (reads do
    not need the index); a look-up finds nothing or fails as the index's damage, and so
    does a write that indexes tokens (not as a storage to try again shortly), which
    leaves nothing; ``rebuild_index`` makes the index whole from the token sets."""
    path = tmp_path / "s.sqlite"
    storage = SqliteStorage(path, create=True)
    _write(storage, {b"a": [tok(b"shared"), tok(b"a")], b"b": [tok(b"shared")]})
    storage.close()
    with HostDatabase(path) as db:
        for statement in INDEX_DAMAGE[damage]:
            db.execute(statement)
    storage = SqliteStorage(path, create=True)  # as a vault opens it
    try:
        with suppress(IndexDamagedError):
            assert storage.find([tok(b"shared")]) == []
        with pytest.raises(IndexDamagedError, match="coffre repair-index"):
            _write(storage, {b"c": [tok(b"shared")]})
        assert storage.latest(b"c") is None
        storage.rebuild_index()
        assert storage.find([tok(b"shared")]) == [b"a", b"b"]
        _write(storage, {b"c": [tok(b"shared")]})
        assert storage.find([tok(b"shared")]) == [b"a", b"b", b"c"]
    finally:
        storage.close()
