"""An erased patient cannot be recovered by anyone holding everything that remains: the
storage (every row, and the raw files), the key custody (every key-encryption key it
has, the root secret). The same attempt opens every record before the erasure, so it
is a real attempt."""

from __future__ import annotations

from typing import Any

import pytest
from pg import Cluster, HostDatabase
from softhsm import BOTH_CUSTODIES

from coffre.custody import WrappedKey, open_custody
from coffre.exceptions import CoffreError
from coffre.seal import AeadEnvelope, random_key
from coffre.service import RecordStore, Vault
from coffre.service.audit import Access
from coffre.service.erasure import erase_patient
from coffre.service.stored import event_associated, version_associated
from coffre.service.vault import STORAGE_FILE

OPERATOR = Access("test operator", reason="GDPR art. 17")


def _patient(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "name": [{"family": "Secret"}]}


def _observation(patient_id: str, number: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{patient_id}-{number}",
        "status": "final",
        "code": {"text": f"mesure {number}"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def _task(patient_id: str) -> dict[str, Any]:
    """A record outside the compartment that names one patient: sealed in theirs."""
    return {
        "resourceType": "Task",
        "id": f"{patient_id}-task",
        "status": "requested",
        "intent": "order",
        "description": "rappel du vaccin",
        "for": {"reference": f"Patient/{patient_id}"},
    }


@pytest.fixture
def filled(records: RecordStore) -> RecordStore:
    """Forty patients (enough for the data keys to fill several pages), with three
    observations and a task each, each write leaving an AuditEvent in its patient's
    compartment."""
    for n in range(40):
        with records.writer() as writer:
            writer.update("Patient", f"p{n}", _patient(f"p{n}"))
            for number in range(3):
                writer.update("Observation", f"p{n}-{number}", _observation(f"p{n}", number))
            writer.update("Task", f"p{n}-task", _task(f"p{n}"))
    return records


def _candidate_keys(vault: Vault, host: HostDatabase) -> list[bytes]:
    """Every key that could open a record: each wrapped key the storage holds unwrapped by
    each key-encryption key the custody knows, the custody's raw keys where it can give
    them (a keyring; a token's never leave it), the root secret."""
    custodian = open_custody(vault.keyring)
    rows = host.execute("SELECT kek_id, wrapped FROM data_keys").fetchall()
    keks: dict[str, object] = getattr(custodian, "_keks", {})
    kek_ids = {str(row[0]) for row in rows} | {custodian.wrap(random_key()).kek_id} | set(keks)
    candidates = [custodian.root_secret(), *(k for k in keks.values() if isinstance(k, bytes))]
    for row in rows:
        for kek_id in kek_ids:
            try:
                candidates.append(custodian.unwrap(WrappedKey(kek_id, bytes(row[1]))))
            except CoffreError:
                continue
    return candidates


def _opened(vault: Vault, comp: bytes) -> tuple[int, int]:
    """How many of a compartment's sealed bodies (versions and AuditEvents) some
    candidate key opens, out of how many there are."""
    envelope = AeadEnvelope()
    with HostDatabase.of(vault) as host:
        versions = host.execute(
            "SELECT loc, version, comp, ts, deleted, body FROM versions WHERE comp = ?", (comp,)
        ).fetchall()
        sealed = [
            (bytes(body), version_associated(bytes(loc), version, bytes(c), ts, bool(deleted)))
            for loc, version, c, ts, deleted, body in versions
        ]
        events = host.execute("SELECT body FROM audit_events WHERE comp = ?", (comp,))
        sealed += [(bytes(row[0]), event_associated(comp)) for row in events.fetchall()]
        keys = _candidate_keys(vault, host)
    opened = 0
    for body, associated in sealed:
        for key in keys:
            try:
                envelope.open(key, body, associated)
            except CoffreError:
                continue
            opened += 1
            break
    return opened, len(sealed)


def _wrapped_key(vault: Vault, comp: bytes) -> bytes:
    with HostDatabase.of(vault) as host:
        (row,) = host.execute("SELECT wrapped FROM data_keys WHERE comp = ?", (comp,)).fetchall()
    return bytes(row[0])


def _host_files(vault: Vault, request: pytest.FixtureRequest) -> bytes:
    """The bytes of the files where the host keeps the data keys, as they are on disk:
    SQLite's file and WAL, or PostgreSQL's data keys table (after a CHECKPOINT writes
    the shared buffers out)."""
    if vault.storage_url is None:
        files = [vault.storage_path, vault.storage_path.with_name(STORAGE_FILE + "-wal")]
        return b"".join(path.read_bytes() for path in files if path.exists())
    cluster: Cluster = request.getfixturevalue("postgres")
    with HostDatabase.of(vault) as host:
        host.execute("CHECKPOINT")
        (row,) = host.execute("SELECT pg_relation_filepath('data_keys')").fetchall()
    return b"".join(path.read_bytes() for path in sorted(cluster.data.glob(f"{row[0]}*")))


@BOTH_CUSTODIES
def test_an_erased_patient_cannot_be_recovered_with_every_key_that_remains(
    filled: RecordStore, vault: Vault, request: pytest.FixtureRequest
) -> None:
    comp = filled.keys.patient_compartment("p7")
    opened, total = _opened(vault, comp)
    assert opened == total == 6  # five records and their AuditEvent: all open before
    wrapped = _wrapped_key(vault, comp)
    assert wrapped in _host_files(vault, request)
    erase_patient(filled, "p7", OPERATOR)
    filled.storage.purge_erased()
    assert _opened(vault, comp) == (0, total)
    assert wrapped not in _host_files(vault, request)
    other = filled.keys.patient_compartment("p8")
    assert _opened(vault, other) == (6, 6)


def test_postgresql_keeps_the_deleted_key_until_the_purge(
    filled: RecordStore, vault: Vault, backend: str, request: pytest.FixtureRequest
) -> None:
    """Why ``purge_erased`` exists: a deleted row's bytes stay in the storage's files."""
    if backend != "postgresql":
        pytest.skip("SQLite overwrites the deleted row in the erasure's own transaction")
    comp = filled.keys.patient_compartment("p7")
    wrapped = _wrapped_key(vault, comp)
    erase_patient(filled, "p7", OPERATOR)
    assert wrapped in _host_files(vault, request)
    filled.storage.purge_erased()
    assert wrapped not in _host_files(vault, request)
