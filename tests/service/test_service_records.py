"""The record store: what reaches the storage, and what a tampered storage gives back."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import shared_data_path
from pg import HostDatabase, stored_bytes
from softhsm import BOTH_CUSTODIES

from coffre.api.search import search_page
from coffre.exceptions import FhirError, SealError
from coffre.fhir import json
from coffre.fhir.validation import validate
from coffre.service import RecordStore, Stored, Vault
from coffre.service import writer as writer_module
from coffre.service.bundles import BundleProcessor
from coffre.service.export import start_job
from coffre.service.indexing import index_tokens, own_tokens
from coffre.storage.base import HistoryQuery


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


def test_bodies_that_differ_by_a_name_s_length_show_the_host_one_length(
    records: RecordStore,
) -> None:
    """Two centres whose names differ by ten letters: their sealed bodies are the same
    length, and open to the JSON written (docs/leakage.md, the padding)."""
    names = {"court": "Centre Laval", "long": "Centre de Saint-Jérôme"}
    with records.writer() as writer:
        for place, name in names.items():
            writer.update(
                "Location", place, {"resourceType": "Location", "id": place, "name": name}
            )
    sealed = [records.storage.latest(records.keys.location("Location", p)) for p in names]
    assert len({len(version.body) for version in sealed if version is not None}) == 1
    for place, name in names.items():
        stored = records.read("Location", place)
        assert stored.resource()["name"] == name and stored.body == json.canonical(
            stored.resource()
        )


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


def test_a_read_overtaken_by_writes_of_another_process_is_no_integrity_failure(
    vault: Vault, records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server process updates the record each time this one has looked it up and
    before it follows the log: the log moved, so the record is looked up again, and the
    read gives the latest version instead of refusing the record as tampered with."""
    patient_id = _create(records, {"resourceType": "Patient", "gender": "male"})
    other_process = vault.open()
    look_up = records.storage.latest
    overtaken = []

    def look_up_then_a_write_lands(loc: bytes) -> Any:
        found = look_up(loc)
        if len(overtaken) < 4:
            overtaken.append(found)
            gender = ("male", "female")[len(overtaken) % 2]
            with other_process.writer() as writer:
                patient = {"resourceType": "Patient", "id": patient_id, "gender": gender}
                writer.update("Patient", patient_id, patient)
        return found

    monkeypatch.setattr(records.storage, "latest", look_up_then_a_write_lands)
    stored = records.read("Patient", patient_id)
    assert (stored.version, stored.resource()["gender"]) == (5, "male")


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
    ``meta.lastUpdated`` included, the client's own ``meta`` kept. Read back with its
    decimals as written: as floats, Observation-decimal's -1.000000000000000000E+245
    would be -1e+245, of a wider precision interval."""
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
            writer.create(resource, validated=True, own_tokens=own_tokens(records.keys, resource))
            for resource in examples
        ]
        for outcome in created[::2]:
            updated = {**outcome.stored.resource(precise=True), "language": "fr-CA"}
            writer.update(
                outcome.stored.resource_type,
                outcome.stored.id,
                updated,
                validated=True,
                own_tokens=own_tokens(records.keys, updated),
            )
    assert len(created) > 500
    for outcome in created:
        stored = records.read(outcome.stored.resource_type, outcome.stored.id)
        expected = index_tokens(records.keys, stored.resource(precise=True))
        assert sorted(records.storage.tokens_of(stored.loc)) == expected, stored.reference


def _processor(records: RecordStore) -> BundleProcessor:
    base = "http://coffre.test/fhir"
    return BundleProcessor(
        records,
        base,
        returning=None,
        search=lambda writer, kind, pairs: search_page(records, base, kind, pairs, writer=writer),
    )


def _transactions(records: RecordStore, bundles: list[dict[str, Any]]) -> list[Stored]:
    """Run transaction Bundles as the API does (prepared before the write lock, then
    executed under it); what they wrote."""
    written = []
    for bundle in bundles:
        processor = _processor(records)
        prepared = processor.prepare(bundle)
        with records.writer() as writer:
            answer = processor.execute(prepared, writer)
        for entry in answer["entry"]:
            resource_type, resource_id = entry["response"]["location"].split("/")[:2]
            written.append(records.read(resource_type, resource_id))
    return written


def _assert_stored_with_the_tokens_of_what_was_written(
    records: RecordStore, written: list[Stored]
) -> None:
    for stored in written:
        expected = index_tokens(records.keys, stored.resource(precise=True))
        assert sorted(records.storage.tokens_of(stored.loc)) == expected, stored.reference


@pytest.mark.parametrize("folder", ["smart-2019", "fhir-data-pipes-2021"])
def test_a_transaction_stores_its_resources_with_the_tokens_of_what_it_wrote(
    records: RecordStore, folder: str
) -> None:
    """Synthea's transaction Bundles, prepared ahead of the write lock as the API does:
    ids drawn, ``urn:uuid:`` references rewritten and tokens computed but for the
    conditional references (fhir-data-pipes-2021 names its organisations and practitioners
    so, after its information Bundles): every resource is stored with exactly the tokens
    of the resource as written."""
    paths = sorted(shared_data_path("synthea", folder).glob("*.json"))
    information = [path for path in paths if "Information" in path.name]
    patients = [path for path in paths if path not in information][:2]
    bundles = [json.loads(path.read_bytes()) for path in information + patients]
    written = _transactions(records, bundles)
    assert len(written) > 200
    _assert_stored_with_the_tokens_of_what_was_written(records, written)


def test_references_to_a_conditional_create_are_resolved_under_the_write_lock(
    records: RecordStore,
) -> None:
    """A conditional create's id depends on what is stored: a resource referring to it
    keeps its reference parameters' tokens for the write lock, while one referring only
    to plain creates is settled before it, their ids drawn ahead."""
    siret = {"system": "https://sirene.fr/siret", "value": "26750045200011"}
    existing = _create(records, {"resourceType": "Organization", "identifier": [siret]})
    urn = "urn:uuid:5a0f3c1e-0000-4000-8000-00000000000{}".format

    def entry(n: int, resource: dict[str, Any], **request: str) -> dict[str, Any]:
        method = {"method": "POST", "url": resource["resourceType"], **request}
        return {"fullUrl": urn(n), "resource": resource, "request": method}

    organization = {"resourceType": "Organization", "identifier": [siret]}
    patient = {
        "resourceType": "Patient",
        "managingOrganization": {"reference": urn(1)},
        "generalPractitioner": [{"reference": urn(3)}],
    }
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Tremblay"}]}
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Poids"},
        "subject": {"reference": urn(2)},
        "performer": [{"reference": urn(3)}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry(1, organization, ifNoneExist="identifier=https://sirene.fr/siret|26750045200011"),
            entry(2, patient),
            entry(3, practitioner),
            entry(4, observation),
        ],
    }
    processor = _processor(records)
    prepared = processor.prepare(bundle)
    _, patient_entry, practitioner_entry, observation_entry = prepared.entries
    assert patient_entry.drawn_id and practitioner_entry.drawn_id
    to_practitioner = {"reference": f"Practitioner/{practitioner_entry.drawn_id}"}
    assert patient["generalPractitioner"] == [to_practitioner]
    assert patient_entry.unresolved and patient_entry.own_tokens is not None
    assert {"organization", "general-practitioner"} <= patient_entry.own_tokens.later
    assert observation["subject"] == {"reference": f"Patient/{patient_entry.drawn_id}"}
    assert not observation_entry.unresolved and observation_entry.own_tokens is not None
    assert not {"subject", "patient", "performer"} & observation_entry.own_tokens.later
    with records.writer() as writer:
        answer = processor.execute(prepared, writer)
    locations = [e["response"]["location"].split("/")[:2] for e in answer["entry"]]
    assert [resource_id for _, resource_id in locations] == [
        existing,
        patient_entry.drawn_id,
        practitioner_entry.drawn_id,
        observation_entry.drawn_id,
    ]
    stored_patient = records.read("Patient", patient_entry.drawn_id)
    assert stored_patient.resource()["managingOrganization"] == {
        "reference": f"Organization/{existing}"
    }
    written = [records.read(resource_type, resource_id) for resource_type, resource_id in locations]
    _assert_stored_with_the_tokens_of_what_was_written(records, written)


def test_a_clock_stepped_back_never_dates_a_write_before_what_was_written(
    records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NTP step or a restored virtual machine: the versions, the vault's newest write
    and a later export's time keep going forward, and a record's history since a time
    stays whole (its check read non-monotonic times as versions the host dropped)."""
    for version in range(2):
        with records.writer() as writer:
            writer.update(
                "Patient", "p", {"resourceType": "Patient", "id": "p", "active": bool(version)}
            )
    before = records.read("Patient", "p")
    three_days_ago = before.ts - 3 * 86_400 * 1_000_000
    monkeypatch.setattr(writer_module, "now_us", lambda: three_days_ago)
    with records.writer() as writer:
        writer.update("Patient", "p", {"resourceType": "Patient", "id": "p", "gender": "other"})
        writer.update("Patient", "q", {"resourceType": "Patient", "id": "q"})
    after, other = records.read("Patient", "p"), records.read("Patient", "q")
    assert after.ts > before.ts and other.ts >= before.ts
    since = records.history(HistoryQuery(loc=after.loc, since_ts=before.ts))
    assert [stored.version for stored in since] == [3, 2]
    assert start_job(records, "system", "$export", [], None).started >= after.ts


def test_fullurls_in_uri_elements_and_the_narrative_are_rewritten_in_either_phase(
    records: RecordStore,
) -> None:
    """http.html#trules: an entry's fullUrl is replaced in elements of a uri type and in
    the narrative's links as in references. A plain create's is before the write lock,
    the tokens computed after; a conditional create's under it, with all the tokens of an
    entry that holds it so (a ValueSet's ``url``, a coding's ``system`` are indexed)."""
    siret = {"system": "https://sirene.fr/siret", "value": "26750045200011"}
    urn = "urn:uuid:7b1f3c1e-0000-4000-8000-00000000000{}".format
    organization = {"resourceType": "Organization", "identifier": [siret]}
    binary = {"resourceType": "Binary", "contentType": "text/plain"}
    library_type = {"coding": [{"system": "http://hl7.org/fhir/library-type", "code": "asset"}]}
    ahead = {"resourceType": "Library", "status": "active", "type": library_type, "url": urn(2)}
    narrative = f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{urn(1)}">o</a></div>'
    later = {
        "resourceType": "ValueSet",
        "status": "active",
        "url": urn(1),
        "useContext": [
            {"code": {"system": urn(1), "code": "x"}, "valueReference": {"reference": urn(2)}}
        ],
        "text": {"status": "generated", "div": narrative},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn(1),
                "resource": organization,
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": "identifier=https://sirene.fr/siret|26750045200011",
                },
            },
            {"fullUrl": urn(2), "resource": binary, "request": {"method": "POST", "url": "Binary"}},
            {"fullUrl": urn(3), "resource": ahead, "request": {"method": "POST", "url": "Library"}},
            {
                "fullUrl": urn(4),
                "resource": later,
                "request": {"method": "POST", "url": "ValueSet"},
            },
        ],
    }
    processor = _processor(records)
    prepared = processor.prepare(bundle)
    _, binary_entry, library_entry, value_set_entry = prepared.entries
    assert ahead["url"] == f"Binary/{binary_entry.drawn_id}"
    assert not library_entry.unresolved and library_entry.own_tokens is not None
    assert later["url"] == urn(1) and later["useContext"][0]["code"]["system"] == urn(1)
    assert value_set_entry.unresolved and value_set_entry.own_tokens is None
    with records.writer() as writer:
        answer = processor.execute(prepared, writer)
    locations = [e["response"]["location"].split("/")[:2] for e in answer["entry"]]
    organization_id = locations[0][1]
    stored = records.read("ValueSet", locations[3][1]).resource()
    assert stored["url"] == f"Organization/{organization_id}"
    assert stored["useContext"][0]["code"]["system"] == f"Organization/{organization_id}"
    assert f'<a href="Organization/{organization_id}">' in stored["text"]["div"]
    assert stored["useContext"][0]["valueReference"] == {
        "reference": f"Binary/{binary_entry.drawn_id}"
    }
    written = [records.read(resource_type, resource_id) for resource_type, resource_id in locations]
    _assert_stored_with_the_tokens_of_what_was_written(records, written)
