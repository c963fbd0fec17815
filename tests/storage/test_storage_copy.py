"""Copying a storage to another backend without decrypting it (coffre.storage.copy): to
the other backend and back, every row the same; a copy interrupted between batches
carries on; a destination that holds anything else is refused; a table or column the
copy does not know is refused rather than left behind."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pytest
from conftest import FHIR_JSON
from hypothesis import given
from hypothesis import strategies as st
from pg import Cluster, HostDatabase
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.cli.migrate import TreeRoot
from coffre.exceptions import StorageError, VaultStateError
from coffre.service import Vault
from coffre.storage.copy import (
    TABLES,
    CopyReport,
    NotACopy,
    Summary,
    copy_tables,
    open_endpoint,
    summarise,
)


def _write(client: TestClient, count: int) -> list[str]:
    """Creates, updates and a delete: versions, tokens, leaves, audit events and keys.
    Returns the ids of the Patients written, the last one deleted."""
    written = []
    for number in range(count):
        patient = {"resourceType": "Patient", "name": [{"family": f"Tremblay{number}"}]}
        created = client.post("/fhir/Patient", json=patient, headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        ident = created.json()["id"]
        patient |= {"id": ident, "gender": "female"}
        updated = client.put(f"/fhir/Patient/{ident}", json=patient, headers=FHIR_JSON)
        assert updated.status_code == 200, updated.text
        assert client.get(f"/fhir/Patient/{ident}").status_code == 200
        written.append(ident)
    assert client.delete(f"/fhir/Patient/{ident}").status_code in (200, 204)
    return written


def _location(vault: Vault) -> str:
    return vault.storage_url or str(vault.storage_path)


def _other(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    """A new, empty storage on the other backend than ``backend``."""
    if backend == "sqlite":
        cluster: Cluster = request.getfixturevalue("postgres")
        return cluster.new_storage_url()
    return str(tmp_path / f"{name}.sqlite")


def _same(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    return _other("postgresql" if backend == "sqlite" else "sqlite", tmp_path, request, name)


def _vault_folder(
    vault: Vault, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Vault, str]:
    """A vault folder with ``vault``'s keys, and its storage on the other backend (none yet)."""
    copied = Vault.at(tmp_path / "copied", vault.keyring)
    copied.folder.mkdir()
    target = _other(backend, tmp_path, request, "copied/storage")
    if target.startswith("postgresql://"):
        (copied.folder / "storage.url").write_text(target)
    return copied, target


def _copy(source: str, destination: str, batch: int = 7, **options: object) -> CopyReport:
    with (
        closing(open_endpoint(source)) as reader,
        closing(open_endpoint(destination, copy_of=source)) as writer,
    ):
        return copy_tables(reader, writer, batch=batch, **options)  # type: ignore[arg-type]


def _summaries(location: str) -> dict[str, tuple[int, str]]:
    with closing(open_endpoint(location)) as endpoint, endpoint.snapshot():
        side = summarise(endpoint, 100, None)
    return {name: (summary.rows, summary.digest) for name, summary in side.tables.items()}


def _sqlite_rows(path: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of an SQLite file, in rowid or key order, but the FTS5
    index's: built from the token sets, its runs depend on how they were written."""
    with closing(sqlite3.connect(path)) as db:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'"
                " AND name NOT LIKE 'token_index%'"
            )
        ]
        return {
            name: db.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall() for name in names
        }


def test_a_copy_to_the_other_backend_and_back_holds_the_same_rows(
    client: TestClient, vault: Vault, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _write(client, 12)
    there, back = (
        _other(backend, tmp_path, request, "there"),
        _same(backend, tmp_path, request, "back"),
    )
    out = _copy(_location(vault), there)
    home = _copy(there, back)
    assert out.mismatched == [] and home.mismatched == []
    assert out.source.tables["versions"].rows == 25  # 12 creates, 12 updates, a delete
    assert all(out.source.tables[t.name].rows > 0 for t in TABLES if t.name != "coffre_meta")
    assert _summaries(back) == _summaries(_location(vault))
    if backend == "sqlite":  # byte for byte, the SQLite tables themselves
        assert _sqlite_rows(back) == _sqlite_rows(_location(vault))


def test_the_copy_serves_as_a_vault_and_numbers_new_versions_after_the_copied_ones(
    client: TestClient, vault: Vault, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _write(client, 3)
    before = client.get("/fhir/Patient/_history").json()["total"]  # reads are logged too
    copied, target = _vault_folder(vault, backend, tmp_path, request)
    assert _copy(_location(vault), target).mismatched == []
    if target.startswith("postgresql://"):  # analysed, for the new server's first plans
        with HostDatabase(target) as db:
            analysed = db.execute(
                "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = current_schema()"
            ).fetchall()
        assert {"tokens", "versions", "current"} <= {row[0] for row in analysed}
    records = copied.open()
    try:
        with TestClient(create_app(records)) as there:
            assert there.get("/fhir/Patient/_history").json()["total"] == before
            created = there.post(
                "/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON
            )
            assert created.status_code == 201, created.text
            assert there.get(f"/fhir/Patient/{created.json()['id']}").status_code == 200
            assert there.get("/fhir/Patient/_history").json()["total"] == before + 1
    finally:
        records.storage.close()


class _Interrupt(Exception):
    pass


class _StopAfter:
    """A progress that interrupts the copy after some batches, as a kill would."""

    def __init__(self, batches: int) -> None:
        self.left = batches

    def start(self, rows: int) -> None:
        pass

    def advance(self, rows: int, data_bytes: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise _Interrupt


@pytest.mark.parametrize("batches", [1, 9, 30])
def test_an_interrupted_copy_carries_on_where_it_stopped(
    client: TestClient,
    vault: Vault,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    batches: int,
) -> None:
    """And until it is finished no vault opens on it (one cut off after its first rows
    opened, the first batch's alone as an empty vault, and signed a new log over what the
    old one covered), nor is it copied from."""
    _write(client, 10)
    copied, target = _vault_folder(vault, backend, tmp_path, request)
    with pytest.raises(_Interrupt):
        _copy(_location(vault), target, batch=3, progress=_StopAfter(batches))
    with pytest.raises(VaultStateError, match="is an unfinished copy of"):
        copied.open()
    with pytest.raises(StorageError, match="the source is itself an unfinished copy"):
        _copy(target, str(tmp_path / "further.sqlite"))
    report = _copy(_location(vault), target, batch=3)
    copied.open().storage.close()
    assert report.mismatched == [] and sum(report.resumed.values()) > 0
    assert _summaries(target) == _summaries(_location(vault))
    again = _copy(_location(vault), target)  # a finished copy: nothing to add
    assert again.mismatched == [] and sum(again.resumed.values()) == sum(
        s.rows for s in again.source.tables.values()
    )


def _spelled_otherwise(location: str) -> str:
    """The same storage, its location written another way (as ``localhost`` for
    ``127.0.0.1`` would be): the URL's parameters in another order, the path through
    its folder's parent."""
    if "://" in location:
        base, _, query = location.partition("?")
        return f"{base}?{'&'.join(reversed(query.split('&')))}"
    path = Path(location)
    return str(path.parent / ".." / path.parent.name / path.name)


def test_a_copy_into_its_own_storage_is_refused_and_serves_on(
    client: TestClient, vault: Vault
) -> None:
    """A backup whose destination was the live database dropped its indexes under its
    own read snapshot's lock, and every server process waited behind it."""
    _write(client, 1)
    source = _location(vault)
    same = _spelled_otherwise(source)
    assert same != source
    with pytest.raises(StorageError, match="the same storage"):
        _copy(source, same)
    assert client.get("/fhir/Patient").status_code == 200  # indexes and all, untouched
    assert _summaries(source) == _summaries(same)


def test_a_destination_holding_something_else_is_refused_untouched(
    client: TestClient, vault: Vault, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The source moved on after the copy: every record copied has a new version, so
    whichever comes last in the destination's tables differs (a new record alone may
    land after every copied one, and the copy then rightly carries on)."""
    written = _write(client, 2)
    target = _other(backend, tmp_path, request, "copy")
    assert _copy(_location(vault), target).mismatched == []
    for ident in written:
        patient = {"resourceType": "Patient", "id": ident, "gender": "male"}
        assert client.put(f"/fhir/Patient/{ident}", json=patient, headers=FHIR_JSON).is_success
    before = _summaries(target)
    with pytest.raises(NotACopy, match="not a partial copy"):
        _copy(_location(vault), target)
    assert _summaries(target) == before


def test_a_copy_that_differs_is_reported(
    client: TestClient, vault: Vault, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The destination read back, not what was sent to it: a row changed after it landed
    shows in the digest of its table."""
    _write(client, 2)
    target = _other(backend, tmp_path, request, "copy")

    class _Tamper:
        def start(self, rows: int) -> None:
            pass

        def advance(self, rows: int, data_bytes: int) -> None:
            with HostDatabase(target if "://" in target else Path(target)) as db:
                db.execute("UPDATE leaves SET data = ? WHERE idx = 0", (b"forged",))

    report = _copy(_location(vault), target, batch=1000, progress=_Tamper(), leaf_fold=TreeRoot)
    assert report.mismatched == ["leaves", "log root"]


def test_a_table_the_copy_does_not_know_is_refused(vault: Vault, tmp_path: Path) -> None:
    with HostDatabase.of(vault) as db:
        db.execute("CREATE TABLE notes (body text)")
    with pytest.raises(StorageError, match="does not know: notes"):
        _copy(_location(vault), str(tmp_path / "copy.sqlite"))


def test_summaries_tell_rows_apart_whatever_their_types() -> None:
    def digest(rows: Sequence[tuple[object, ...]]) -> str:
        summary = Summary()
        summary.add(rows)
        return summary.digest

    assert digest([(b"ab", b"c")]) != digest([(b"a", b"bc")])
    assert digest([(1,)]) != digest([(b"\x01",)]) != digest([("1",)])
    assert digest([(1, 2)]) != digest([(1,), (2,)])


VALUES = st.one_of(st.binary(max_size=40), st.integers(), st.text(max_size=10))


@given(st.lists(st.tuples(VALUES, VALUES), max_size=20), st.data())
def test_a_summary_does_not_depend_on_how_the_rows_are_batched(
    rows: list[tuple[object, ...]], data: st.DataObject
) -> None:
    """The source is summarised in the copy's batches, the destination in the reading's."""
    cut = data.draw(st.integers(0, len(rows)))
    whole, split = Summary(), Summary()
    whole.add(rows)
    split.add(rows[:cut])
    split.add(rows[cut:])
    assert whole.rows == split.rows == len(rows) and whole.digest == split.digest


OLD_AUDIT_EVENTS = """
ALTER TABLE audit_events RENAME TO newer_events;
CREATE TABLE audit_events (
    digest BLOB PRIMARY KEY, comp BLOB NOT NULL, leaf INTEGER NOT NULL, body BLOB NOT NULL
);
INSERT INTO audit_events SELECT digest, comp, leaf, body FROM newer_events;
DROP TABLE newer_events;
CREATE INDEX audit_events_by_comp ON audit_events (comp, leaf);
"""
"""The layout of the vaults written before 2026-12-04: AuditEvents keyed by their digest,
which put each new one on a random page of that key's index."""


def _audit_events_key(path: str) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return [row[1] for row in db.execute("PRAGMA table_info(audit_events)") if row[5]]


def test_a_vault_whose_audit_events_are_keyed_by_digest_is_served_and_copied(
    tmp_path: Path,
) -> None:
    vault = Vault.at(tmp_path / "vault")
    vault.create()
    with closing(sqlite3.connect(vault.storage_path)) as db:
        db.executescript(OLD_AUDIT_EVENTS)
    records = vault.open()
    with TestClient(create_app(records)) as client:
        _write(client, 3)
        patient = {"resourceType": "Patient", "name": [{"family": "Gagnon"}]}
        ident = client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).json()["id"]
        assert client.get(f"/fhir/Patient/{ident}").status_code == 200
    history = records.access_history(ident)
    assert [event["action"] for event in history] == ["R", "C"]
    records.storage.close()
    target = str(tmp_path / "copy.sqlite")
    assert _copy(_location(vault), target).mismatched == []
    assert _audit_events_key(str(vault.storage_path)) == ["digest"]
    assert _audit_events_key(target) == ["leaf"]
    assert _summaries(target) == _summaries(_location(vault))
