"""Key rotation: a new key-encryption key, the data keys rewrapped under it batch by batch
(compare-and-set against concurrent writers, resumable), the old key retired only once
nothing needs it; records untouched, the log and the auditor still satisfied."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from pg import HostDatabase
from softhsm import BOTH_CUSTODIES
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.cli.audit import audit_log
from coffre.custody import WrappedKey
from coffre.exceptions import CustodyError, VaultStateError
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore, Vault
from coffre.service.audit import OPERATOR
from coffre.service.erasure import erase_patient
from coffre.service.rotation import KeyRotation, RewrapReport

PATIENTS = 5


def _patients(records: RecordStore, count: int = PATIENTS) -> dict[str, dict[str, Any]]:
    """Patients with an observation each, in compartments of their own; by reference."""
    made = {}
    with records.writer() as writer:
        for number in range(count):
            patient = writer.create({"resourceType": "Patient", "gender": "female"}).stored
            reference = f"Patient/{patient.id}"
            observation = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"weight {number}"},
                "subject": {"reference": reference},
            }
            made[reference] = patient.resource()
            stored = writer.create(observation).stored
            made[stored.reference] = stored.resource()
    return made


def _reads_all(vault: Vault, made: dict[str, dict[str, Any]]) -> None:
    """Every record reads back, from a freshly opened vault (no data key cached)."""
    records = vault.open()
    try:
        for reference, resource in made.items():
            assert records.read(*reference.split("/")).resource() == resource
    finally:
        records.storage.close()


def _kek_ids(records: RecordStore) -> dict[str, int]:
    return records.storage.wrapped_key_counts()


@pytest.fixture
def opened(vault: Vault) -> Iterator[RecordStore]:
    records = vault.open()
    yield records
    records.storage.close()


@BOTH_CUSTODIES
def test_a_rotated_vault_no_longer_needs_the_old_key(vault: Vault, opened: RecordStore) -> None:
    made = _patients(opened)
    rotation = KeyRotation(opened)
    old, new = rotation.rotate()
    # The patients' data keys, and the gateway's, made for the AuditEvents of their leaves.
    assert _kek_ids(opened) == {old: PATIENTS + 1} and rotation.pending() == PATIENTS + 1
    bodies = _sealed_bodies(vault)
    report = rotation.rewrap(batch=2)
    assert report == RewrapReport(rewrapped=PATIENTS + 1, lost=0)
    assert _kek_ids(opened) == {new: PATIENTS + 1} and rotation.pending() == 0
    assert rotation.retirable() == [old]
    rotation.retire(old)
    assert opened.custodian.kek_ids() == [new]  # the custody no longer holds the old key
    assert _sealed_bodies(vault) == bodies  # records untouched
    _reads_all(vault, made)
    with TestClient(create_app(opened)) as client:
        report_audit = audit_log(client, opened.ledger.verifier_key, None, full=True)
    assert report_audit.consistent and not report_audit.violations
    kinds = [Leaf.decode(data).kind for data in opened.storage.leaves(0, 10**6)]
    assert kinds.count(LeafKind.KEY_ROTATION) == 2  # the rotation and the retirement


def _sealed_bodies(vault: Vault) -> str:
    with HostDatabase.of(vault) as db:
        rows = db.execute("SELECT loc, version, body FROM versions ORDER BY seq").fetchall()
    return hashlib.sha256(repr([tuple(map(bytes, row[::2])) for row in rows]).encode()).hexdigest()


def test_the_rotation_and_retirement_are_audit_events_of_the_operator(
    opened: RecordStore,
) -> None:
    _patients(opened, 1)
    rotation = KeyRotation(opened)
    old, new = rotation.rotate()
    rotation.rewrap()
    rotation.retire(old)
    comp = opened.keys.shared_compartment("AuditEvent")
    events = [
        opened._open_event(sealed, opened.committed_key)
        for sealed in opened.storage.events_of(comp)
    ]
    texts = [event.decode() for event in events]
    assert any(f"{new} made active, replacing {old}" in text for text in texts)
    assert any(f"{old} destroyed" in text for text in texts)
    assert all("coffre command line" in text for text in texts)


def test_a_key_is_destroyed_only_once_its_retirement_is_logged(
    vault: Vault, opened: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retirement stopped between the two (the custody failing here, a crash alike)
    leaves a logged retirement and the key, which running it again destroys: never a key
    gone that the log does not know of (the retirement completes erasures for backups)."""
    _patients(opened, 1)
    rotation = KeyRotation(opened)
    old, new = rotation.rotate()
    rotation.rewrap()

    def logged_retirements() -> int:
        fresh = vault.open()
        try:
            kinds = [Leaf.decode(data).kind for data in fresh.storage.leaves(0, 10**6)]
        finally:
            fresh.storage.close()
        return kinds.count(LeafKind.KEY_ROTATION) - 1  # the rotation's

    def failing(kek_id: str) -> None:
        raise CustodyError(f"the token failed while destroying {kek_id}")

    with monkeypatch.context() as patch:
        patch.setattr(opened.custodian, "retire_kek", failing)
        with pytest.raises(CustodyError):
            rotation.retire(old)
    assert logged_retirements() == 1 and old in opened.custodian.kek_ids()
    rotation.retire(old)
    assert logged_retirements() == 2 and opened.custodian.kek_ids() == [new]


def test_retiring_refuses_while_a_data_key_still_needs_the_old_key(
    vault: Vault, opened: RecordStore
) -> None:
    made = _patients(opened, 2)
    rotation = KeyRotation(opened)
    old, _ = rotation.rotate()
    with pytest.raises(VaultStateError, match=f"3 data keys are still wrapped by {old}"):
        rotation.retire(old)
    assert old in opened.custodian.kek_ids() and rotation.retirable() == []
    _reads_all(vault, made)


def test_the_active_key_cannot_be_retired(opened: RecordStore) -> None:
    rotation = KeyRotation(opened)
    with pytest.raises(CustodyError, match="active key-encryption key: rotate first"):
        rotation.retire(opened.custodian.active_kek())


def test_an_interrupted_rewrap_resumes_without_another_key(
    vault: Vault, opened: RecordStore
) -> None:
    made = _patients(opened)
    rotation = KeyRotation(opened)
    old, new = rotation.rotate()

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotation.rewrap(interrupt, batch=3)
    assert _kek_ids(opened) == {new: 3, old: PATIENTS + 1 - 3}
    with pytest.raises(VaultStateError, match=r"unfinished.*rotate --resume"):
        rotation.rotate()
    resumed = KeyRotation(vault_records := vault.open())  # another run of the command
    try:
        assert resumed.rewrap() == RewrapReport(rewrapped=PATIENTS + 1 - 3, lost=0)
        resumed.retire(old)
        assert vault_records.custodian.kek_ids() == [new]
    finally:
        vault_records.storage.close()
    _reads_all(vault, made)


def test_a_compare_and_set_loses_cleanly_to_a_concurrent_rewrap(
    vault: Vault, opened: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process rewraps the batch between our read and our write: our writes of it
    are refused, its stay, and every key is still under the active key."""
    made = _patients(opened, 3)
    rotation = KeyRotation(opened)
    rotation.rotate()
    other = vault.open()
    rewrapped = rotation._rewrapped
    interfered = []

    def concurrently(comp: bytes, kek_id: str, wrapped: bytes) -> WrappedKey | None:
        if not interfered:
            interfered.append(KeyRotation(other).rewrap())
        return rewrapped(comp, kek_id, wrapped)

    monkeypatch.setattr(rotation, "_rewrapped", concurrently)
    try:
        report = rotation.rewrap()
    finally:
        other.storage.close()
    assert interfered == [RewrapReport(rewrapped=4, lost=0)]  # 3 patients' keys, the gateway's
    assert report == RewrapReport(rewrapped=0, lost=4)
    assert _kek_ids(opened) == {opened.custodian.active_kek(): 4}
    _reads_all(vault, made)


def test_an_erasure_between_the_read_and_the_write_wins(
    vault: Vault, opened: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrap never brings back the data key of a patient erased meanwhile."""
    made = _patients(opened, 3)
    erased = next(reference for reference in made if reference.startswith("Patient/"))
    comp = opened.keys.patient_compartment(erased.removeprefix("Patient/"))
    rotation = KeyRotation(opened)
    rotation.rotate()
    rewrapped = rotation._rewrapped

    def erasing(comp_read: bytes, kek_id: str, wrapped: bytes) -> WrappedKey | None:
        if not opened.is_erased(comp):
            erase_patient(opened, erased.removeprefix("Patient/"), OPERATOR)
        return rewrapped(comp_read, kek_id, wrapped)

    monkeypatch.setattr(rotation, "_rewrapped", erasing)
    assert rotation.rewrap() == RewrapReport(rewrapped=3, lost=1)
    assert opened.storage.wrapped_key(comp) is None
    assert _kek_ids(opened) == {opened.custodian.active_kek(): 3}  # 2 patients + the gateway
    _reads_all(vault, {ref: res for ref, res in made.items() if erased not in (ref, _subject(res))})


@BOTH_CUSTODIES
def test_an_erased_patients_data_key_put_back_by_the_host_is_deleted_not_rewrapped(
    vault: Vault, opened: RecordStore
) -> None:
    """The host kept the row from a backup taken before the erasure and put it back: a
    rewrap under the new KEK, then the old KEK's retirement, made the erased records open
    again with the keys that remain (a hostile-host probe's finding)."""
    made = _patients(opened, 2)
    erased = next(reference for reference in made if reference.startswith("Patient/"))
    comp = opened.keys.patient_compartment(erased.removeprefix("Patient/"))
    kept = opened.storage.wrapped_key(comp)
    assert kept is not None
    erase_patient(opened, erased.removeprefix("Patient/"), OPERATOR)
    with opened.storage.transaction() as host:
        host.put_wrapped_key(comp, *kept)
    rotation = KeyRotation(opened)
    old, _ = rotation.rotate()
    assert rotation.rewrap() == RewrapReport(rewrapped=2, dropped=1)  # 1 patient + the gateway
    assert opened.storage.wrapped_key(comp) is None
    assert old in rotation.retirable()
    _reads_all(vault, {ref: res for ref, res in made.items() if erased not in (ref, _subject(res))})


def _subject(resource: dict[str, Any]) -> str | None:
    subject: str | None = resource.get("subject", {}).get("reference")
    return subject


def test_a_compare_and_set_replaces_only_the_wrapping_it_read(opened: RecordStore) -> None:
    _patients(opened, 1)
    comp, kek, wrapped = opened.storage.wrapped_keys_besides("none", b"", 1)[0]
    with opened.storage.transaction() as txn:
        assert not txn.rewrap_key(comp, (kek, wrapped + b"x"), ("kek-9", b"new"))
        assert not txn.rewrap_key(b"\0" * 32, (kek, wrapped), ("kek-9", b"new"))
        assert txn.rewrap_key(comp, (kek, wrapped), ("kek-9", b"new"))
        assert not txn.rewrap_key(comp, (kek, wrapped), ("kek-9", b"newer"))
    assert opened.storage.wrapped_key(comp) == ("kek-9", b"new")


def test_the_listing_counts_each_keys_data_keys(opened: RecordStore) -> None:
    _patients(opened, 2)
    old = opened.custodian.active_kek()  # kek-1, or pkcs11:kek-1 in a token
    rotation = KeyRotation(opened)
    rotation.rotate()
    new = opened.custodian.active_kek()
    uses = {(use.kek_id, use.active, use.held, use.data_keys) for use in rotation.keks()}
    assert uses == {(old, False, True, 3), (new, True, True, 0)}  # 2 patients, the gateway


def test_a_data_key_under_a_kek_the_custody_lacks_is_named_not_rewrapped(
    vault: Vault, opened: RecordStore
) -> None:
    _patients(opened, 1)
    with HostDatabase.of(vault) as db:  # the host slips in a row no key of ours wraps
        db.execute("INSERT INTO data_keys VALUES (?, ?, ?)", (b"\1" * 32, "kek-9", b"\0" * 40))
    rotation = KeyRotation(opened)
    assert ("kek-9", False, False, 1) in {
        (use.kek_id, use.active, use.held, use.data_keys) for use in rotation.keks()
    }
    with pytest.raises(CustodyError, match="kek-9, which the custody does not hold"):
        rotation.rewrap()
