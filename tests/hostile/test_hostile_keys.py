"""The host moves, copies, plants or deletes wrapped data keys. Nothing in a wrapped key
says whose it is, so the log records each data key made by its binding to the
compartment: a key the host gives a compartment that is not the one the log recorded is
refused, for reads and writes alike, and a rotation deletes it rather than rewrap it
(a hostile-host probe's findings: a patient's key copied under a made-up compartment, or
under a new patient's, outlived their erasure)."""

from __future__ import annotations

from typing import Any

import pytest
from pg import HostDatabase

from coffre.exceptions import SealError
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore, Vault
from coffre.service.audit import Access
from coffre.service.erasure import erase_patient
from coffre.service.rotation import KeyRotation
from coffre.service.writer import Writer

OPERATOR = Access("test operator", reason="GDPR art. 17")


def _patient(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "name": [{"family": "Gagnon"}]}


def _observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "glycémie"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def _write(records: RecordStore, *patients: str) -> None:
    for patient_id in patients:
        with records.writer() as writer:
            writer.update("Patient", patient_id, _patient(patient_id))
            writer.create(_observation(patient_id))


def _row(records: RecordStore, patient_id: str) -> tuple[str, bytes]:
    row = records.storage.wrapped_key(records.keys.patient_compartment(patient_id))
    assert row is not None
    return row


def _put_row(vault: Vault, comp: bytes, row: tuple[str, bytes]) -> None:
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM data_keys WHERE comp = ?", (comp,))
        db.execute("INSERT INTO data_keys (comp, kek_id, wrapped) VALUES (?, ?, ?)", (comp, *row))


def test_each_data_key_made_is_a_leaf_of_the_log(records: RecordStore) -> None:
    _write(records, "anne", "benoit")
    leaves = [Leaf.decode(d) for d in records.storage.leaves(0, records.storage.leaf_count())]
    made = {leaf.loc for leaf in leaves if leaf.kind is LeafKind.DATA_KEY}
    patients = {records.keys.patient_compartment(p) for p in ("anne", "benoit")}
    assert made == patients  # a shared compartment's key, which no erasure shreds, has none


def test_a_key_copied_under_a_made_up_compartment_is_deleted_by_the_rotation(
    vault: Vault, records: RecordStore
) -> None:
    """The copy would have been rewrapped under the new KEK and outlived the erasure."""
    _write(records, "anne", "benoit")
    planted = b"\x07" * 32
    _put_row(vault, planted, _row(records, "anne"))
    erase_patient(records, "anne", OPERATOR)
    rotation = KeyRotation(records)
    old, _ = rotation.rotate()
    report = rotation.rewrap()
    assert report.foreign == 1 and report.rewrapped == 2  # Benoît's key and the gateway's
    assert records.storage.wrapped_key(planted) is None
    assert old in rotation.retirable()


def test_a_key_moved_from_another_patient_is_refused_for_writes_too(
    vault: Vault, records: RecordStore
) -> None:
    """Reads of Benoît failed; a new record of his was sealed under Anne's key."""
    _write(records, "anne", "benoit")
    _put_row(vault, records.keys.patient_compartment("benoit"), _row(records, "anne"))
    reopened = vault.open()  # no key cached
    try:
        with pytest.raises(SealError), reopened.writer() as writer:
            writer.create(_observation("benoit"))
        with pytest.raises(SealError):
            reopened.read("Patient", "benoit")
        assert reopened.read("Patient", "anne").version == 1
    finally:
        reopened.storage.close()


def test_a_deleted_key_is_not_replaced_by_a_new_one(vault: Vault, records: RecordStore) -> None:
    """The next write made a second key for the compartment, the host keeping the first."""
    _write(records, "anne")
    comp = records.keys.patient_compartment("anne")
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM data_keys WHERE comp = ?", (comp,))
    reopened = vault.open()
    try:
        with pytest.raises(SealError), reopened.writer() as writer:
            writer.create(_observation("anne"))
        assert reopened.storage.wrapped_key(comp) is None
    finally:
        reopened.storage.close()


def test_a_new_patients_key_replaced_as_it_is_inserted_is_refused(
    vault: Vault, records: RecordStore
) -> None:
    """A trigger gave every new compartment Anne's wrapped key: all new patients were
    sealed under it, and their erasure shredded nothing."""
    _write(records, "anne")
    kek_id, wrapped = _row(records, "anne")
    with HostDatabase.of(vault) as db:
        if not db.sqlite:
            pytest.skip("the trigger is written in SQLite's dialect; PostgreSQL's DBA can too")
        db.execute(
            "CREATE TRIGGER same_key AFTER INSERT ON data_keys BEGIN UPDATE data_keys"
            f" SET kek_id = '{kek_id}', wrapped = x'{wrapped.hex()}' WHERE comp = NEW.comp; END"
        )
    with pytest.raises(SealError), records.writer() as writer:
        writer.update("Patient", "zoe", _patient("zoe"))
    assert records.storage.wrapped_key(records.keys.patient_compartment("zoe")) is None


def test_keys_made_before_the_log_recorded_them_are_recorded_at_the_next_opening(
    vault: Vault, records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vault of before: its keys are taken as the storage holds them at that opening;
    a key planted afterwards is refused."""
    with monkeypatch.context() as before:
        before.setattr(Writer, "log_data_key", lambda self, comp, key: None)
        _write(records, "anne")
    assert not records.latest_writes.keys_logged
    reopened = vault.open()
    try:
        assert reopened.latest_writes.keys_logged
        assert reopened.read("Patient", "anne").version == 1
        _put_row(vault, reopened.keys.patient_compartment("zoe"), _row(reopened, "anne"))
        with pytest.raises(SealError), reopened.writer() as writer:
            writer.update("Patient", "zoe", _patient("zoe"))
    finally:
        reopened.storage.close()
