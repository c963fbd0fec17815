"""Each request leaves sealed AuditEvents (who, when, why, from where) that its leaves commit to."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pg import HostDatabase

from coffre.exceptions import SealError
from coffre.fhir.validation import validate
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore, Vault
from coffre.service.audit import Access
from coffre.service.writer import Writer
from coffre.storage.base import SealedEvent

NURSE = Access("Infirmière Ouellet", address="10.0.0.7", purpose="TREAT")


def _patient(patient_id: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": patient_id, "name": [{"family": "Roy"}]}


def _observation(patient_id: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "poids"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def _leaves(records: RecordStore, start: int = 0) -> list[Leaf]:
    """The leaves of the records' writes and accesses (those of data keys made aside)."""
    stored = records.storage.leaves(start, records.storage.leaf_count())
    return [leaf for leaf in map(Leaf.decode, stored) if leaf.kind is not LeafKind.DATA_KEY]


def test_one_request_gives_one_event_per_kind_and_compartment(records: RecordStore) -> None:
    with records.writer() as writer, writer.request(NURSE):
        writer.update("Patient", "p1", _patient("p1"))
        writer.create(_observation("p1"))
        writer.update("Patient", "p2", _patient("p2"))
    leaves = _leaves(records)
    assert [leaf.kind for leaf in leaves] == [LeafKind.CREATE] * 3
    assert leaves[0].event_hash == leaves[1].event_hash != leaves[2].event_hash
    first = records.access_history("p1")
    assert len(first) == 1
    event = first[0]
    assert validate(event) == "AuditEvent"
    assert event["action"] == "C"
    assert event["agent"][0]["who"] == {"display": "Infirmière Ouellet"}
    assert event["agent"][0]["network"]["address"] == "10.0.0.7"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    referenced = [entity["what"]["reference"] for entity in event["entity"]]
    assert referenced[0] == "Patient/p1/_history/1"
    assert referenced[1].startswith("Observation/") and referenced[1].endswith("/_history/1")
    assert [e["what"]["reference"] for e in records.access_history("p2")[0]["entity"]] == [
        "Patient/p2/_history/1"
    ]


def test_reads_are_audited_newest_first_and_leaves_keep_the_order_of_writes(
    records: RecordStore,
) -> None:
    with records.writer() as writer, writer.request(NURSE):
        writer.update("Patient", "p1", _patient("p1"))
        writer.delete("Patient", "p1")
        writer.update("Patient", "p1", _patient("p1"))
    assert [(leaf.kind, leaf.version) for leaf in _leaves(records)] == [
        (LeafKind.CREATE, 1),
        (LeafKind.DELETE, 2),
        (LeafKind.UPDATE, 3),
    ]
    stored = records.read("Patient", "p1")
    with records.writer() as writer, writer.request(Access("Dr Tremblay")):
        writer.log_access(LeafKind.READ, [stored])
    history = records.access_history("p1")
    assert [event["action"] for event in history] == ["R", "U", "D", "C"]
    assert history[0]["agent"][0]["who"]["display"] == "Dr Tremblay"
    assert "network" not in history[0]["agent"][0]


def test_an_event_written_by_another_process_while_the_access_history_is_read_waits(
    vault: Vault, records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server process logs a read of the patient after this one checked the
    events against the log and before it lists them: the access history lists what the
    log held when it looked, and the next one the newer event, none as tampered with."""
    with records.writer() as writer, writer.request(NURSE):
        writer.update("Patient", "p1", _patient("p1"))
    other_process = vault.open()
    stored = other_process.read("Patient", "p1")
    list_events = records.storage.events_of

    def a_read_lands_then_list(comp: bytes) -> Sequence[SealedEvent]:
        with other_process.writer() as writer, writer.request(Access("Dr Tremblay")):
            writer.log_access(LeafKind.READ, [stored])
        return list_events(comp)

    monkeypatch.setattr(records.storage, "events_of", a_read_lands_then_list)
    assert [event["action"] for event in records.access_history("p1")] == ["C"]
    monkeypatch.undo()
    assert [event["action"] for event in records.access_history("p1")] == ["R", "C"]


def test_a_failed_request_leaves_no_event_and_no_leaf(records: RecordStore) -> None:
    def failing(writer: Writer) -> None:
        writer.update("Patient", "p1", _patient("p1"))
        raise RuntimeError("the request fails after its write")

    with records.writer() as writer:
        with pytest.raises(RuntimeError), writer.request(NURSE):
            failing(writer)
        with writer.request(NURSE):
            writer.update("Patient", "p2", _patient("p2"))
    assert records.access_history("p1") == []
    assert len(records.access_history("p2")) == 1
    assert len(_leaves(records)) == 1


def _tamper(records: RecordStore, sql: str, *args: object) -> None:
    with HostDatabase.of(records.storage) as db:
        db.execute(sql, args)


def test_an_altered_or_swapped_event_is_refused(records: RecordStore) -> None:
    with records.writer() as writer, writer.request(NURSE):
        writer.update("Patient", "p1", _patient("p1"))
    with records.writer() as writer, writer.request(NURSE):
        writer.update("Patient", "p1", {**_patient("p1"), "gender": "female"})
    older, newer = records.storage.events_of(records.keys.patient_compartment("p1"))[::-1]
    _tamper(records, "UPDATE audit_events SET body = ? WHERE digest = ?", older.body, newer.digest)
    with pytest.raises(SealError):
        records.access_history("p1")
    flipped = bytes([older.body[0] ^ 1]) + older.body[1:]
    _tamper(records, "UPDATE audit_events SET body = ? WHERE digest = ?", newer.body, newer.digest)
    _tamper(records, "UPDATE audit_events SET body = ? WHERE digest = ?", flipped, older.digest)
    with pytest.raises(SealError):
        records.access_history("p1")
