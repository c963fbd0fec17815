"""The record store: what reaches the storage, and what a tampered storage gives back."""

from __future__ import annotations

import pytest
from conftest import shared_data_path
from pg import HostDatabase, stored_bytes
from softhsm import BOTH_CUSTODIES

from coffre.exceptions import FhirError, SealError
from coffre.fhir import json
from coffre.fhir.validation import validate
from coffre.service import RecordStore, Vault
from coffre.service.bundles import BundleProcessor
from coffre.service.searching import index_tokens


def _create(records: RecordStore, resource: dict[str, object]) -> str:
    with records.writer() as writer:
        outcome = writer.create(resource)
    return outcome.stored.id


@BOTH_CUSTODIES
def test_the_storage_holds_no_plaintext(vault: Vault, records: RecordStore) -> None:
    patient_id = _create(
        records,
        {
            "resourceType": "Patient",
            "name": [{"family": "Bouchard", "given": ["Aurélie"]}],
            "birthDate": "1984-02-29",
            "identifier": [{"system": "https://www.ramq.gouv.qc.ca/nam", "value": "BOUA84522912"}],
        },
    )
    _create(
        records,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
        },
    )
    records.storage.close()
    raw = stored_bytes(vault)
    for needle in (
        "Bouchard",
        "Aurélie",
        "1984-02-29",
        "BOUA84522912",
        "29463-7",
        patient_id,
        "Patient",
        "Observation",
    ):
        assert needle.encode() not in raw, needle


def test_resources_of_one_patient_share_a_compartment_and_others_do_not(
    records: RecordStore,
) -> None:
    first = _create(records, {"resourceType": "Patient"})
    second = _create(records, {"resourceType": "Patient"})
    observation = _create(
        records,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "poids"},
            "subject": {"reference": f"Patient/{first}"},
        },
    )
    comp = {
        name: records.storage.latest(records.keys.location(rtype, rid)).comp
        for name, rtype, rid in [
            ("first", "Patient", first),
            ("second", "Patient", second),
            ("obs", "Observation", observation),
        ]
    }  # type: ignore[union-attr]
    assert comp["first"] == comp["obs"] != comp["second"]


@BOTH_CUSTODIES
def test_a_ciphertext_swapped_between_patients_does_not_open(
    vault: Vault, records: RecordStore
) -> None:
    first = _create(records, {"resourceType": "Patient", "gender": "female"})
    second = _create(records, {"resourceType": "Patient", "gender": "male"})
    loc_first, loc_second = (records.keys.location("Patient", pid) for pid in (first, second))
    db = HostDatabase.of(vault)
    body_second = db.execute("SELECT body FROM versions WHERE loc = ?", (loc_second,)).fetchone()[0]
    db.execute("UPDATE versions SET body = ? WHERE loc = ?", (body_second, loc_first))
    db.commit()
    with pytest.raises(SealError):
        records.read("Patient", first)


@BOTH_CUSTODIES
def test_a_deleted_resource_answers_gone_and_keeps_its_history(records: RecordStore) -> None:
    patient_id = _create(records, {"resourceType": "Patient"})
    with records.writer() as writer:
        writer.delete("Patient", patient_id)
    with pytest.raises(FhirError) as caught:
        records.read("Patient", patient_id)
    assert caught.value.status == 410
    assert records.vread("Patient", patient_id, "1").version == 1


def test_an_unchanged_update_writes_no_version(records: RecordStore) -> None:
    patient_id = _create(records, {"resourceType": "Patient", "gender": "other"})
    before = records.storage.last_seq()
    with records.writer() as writer:
        outcome = writer.update(
            "Patient", patient_id, {"resourceType": "Patient", "id": patient_id, "gender": "other"}
        )
    assert not outcome.changed and outcome.stored.version == 1
    assert records.storage.last_seq() == before


@BOTH_CUSTODIES
def test_a_data_key_made_by_a_rolled_back_transaction_never_seals_a_record(
    vault: Vault, records: RecordStore
) -> None:
    with pytest.raises(FhirError), records.writer() as writer:
        writer.update("Patient", "p-rollback", {"resourceType": "Patient", "id": "p-rollback"})
        raise FhirError(409, "conflict", "a later entry failed")
    with records.writer() as writer:
        writer.update(
            "Patient",
            "p-rollback",
            {"resourceType": "Patient", "id": "p-rollback", "gender": "male"},
        )
    reopened = vault.open()
    assert reopened.read("Patient", "p-rollback").resource()["gender"] == "male"


def test_a_failed_savepoint_undoes_its_writes_only(records: RecordStore) -> None:
    with records.writer() as writer:
        writer.update("Patient", "kept", {"resourceType": "Patient", "id": "kept"})
        with pytest.raises(FhirError), writer.savepoint():
            writer.update("Patient", "undone", {"resourceType": "Patient", "id": "undone"})
            raise FhirError(400, "invalid", "this entry fails")
    assert records.read("Patient", "kept").version == 1
    with pytest.raises(FhirError) as caught:
        records.read("Patient", "undone")
    assert caught.value.status == 404


def test_a_transaction_builds_on_its_own_writes_and_forgets_those_rolled_back(
    records: RecordStore,
) -> None:
    with records.writer() as writer:
        writer.update("Patient", "p", {"resourceType": "Patient", "id": "p"})
        with pytest.raises(FhirError), writer.savepoint():
            writer.update("Patient", "p", {"resourceType": "Patient", "id": "p", "gender": "male"})
            latest = writer.latest("Patient", "p")
            assert latest is not None and latest.version == 2
            raise FhirError(400, "invalid", "this entry fails")
        latest = writer.latest("Patient", "p")
        assert latest is not None and latest.version == 1
        assert "gender" not in latest.resource()
        writer.delete("Patient", "p")
        latest = writer.latest("Patient", "p")
        assert latest is not None and latest.deleted and latest.version == 2
    with pytest.raises(FhirError) as caught:
        records.vread("Patient", "p", "2")
    assert caught.value.status == 410


def test_tokens_computed_ahead_of_a_write_are_those_of_the_resource_as_written(
    records: RecordStore,
) -> None:
    """Every HL7 example the server accepts, created and then updated with its own tokens
    computed before the write (as the API computes them, outside the write lock), is
    stored with exactly the tokens of the resource as written: its new id and
    ``meta.lastUpdated`` included, the client's own ``meta`` kept."""
    examples = []
    for path in sorted(shared_data_path("fhir-examples").glob("*.json")):
        resource = json.loads(path.read_bytes())
        try:
            validate(resource)
        except FhirError:
            continue
        examples.append(resource)
    with records.writer() as writer:
        created = [
            writer.create(resource, validated=True, own_tokens=records.own_tokens(resource))
            for resource in examples
        ]
        for outcome in created[::2]:
            updated = {**outcome.stored.resource(), "language": "fr-CA"}
            writer.update(
                outcome.stored.resource_type,
                outcome.stored.id,
                updated,
                validated=True,
                own_tokens=records.own_tokens(updated),
            )
    assert len(created) > 500
    for outcome in created:
        stored = records.read(outcome.stored.resource_type, outcome.stored.id)
        expected = index_tokens(records.keys, stored.resource())
        assert sorted(records.storage.tokens_of(stored.loc)) == expected, stored.reference


def test_a_transaction_stores_its_resources_with_the_tokens_of_what_it_wrote(
    records: RecordStore,
) -> None:
    """Synthea's transaction Bundles, their entries' tokens computed ahead (outside the
    write lock, as the API does) but for those of their references, which the transaction
    resolves: every resource is stored with exactly the tokens of the resource as written."""
    written = []
    for path in sorted(shared_data_path("synthea", "smart-2019").glob("*.json"))[:2]:
        processor = BundleProcessor(records, "http://coffre.test/fhir", include_resources=False)
        prepared = processor.prepare(json.loads(path.read_bytes()))
        assert all(entry.own_tokens is not None for entry in prepared.entries)
        with records.writer() as writer:
            answer = processor.execute(prepared, writer)
        written += [entry["response"]["location"].split("/")[:2] for entry in answer["entry"]]
    assert len(written) > 200
    for resource_type, resource_id in written:
        stored = records.read(resource_type, resource_id)
        expected = index_tokens(records.keys, stored.resource())
        assert sorted(records.storage.tokens_of(stored.loc)) == expected, stored.reference
