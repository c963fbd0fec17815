"""Erasing a patient (crypto-shredding): 410 Gone everywhere their records were, nothing
of them in searches, the others untouched, the log still whole, and every gateway
sharing the vault told by the log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON, put_resource
from pg import HostDatabase
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.cli.audit import audit_log
from coffre.exceptions import FhirError, SealError
from coffre.fhir.validation import validate
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore, Vault
from coffre.service.audit import ERASURE, Access
from coffre.service.erasure import erase_patient

DPO = Access("Claire Dubé (coffre erase)", reason="GDPR art. 17 request 2026-114")


def _patient(patient_id: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": "urn:test", "value": patient_id}],
        "name": [{"family": family}],
    }


def _observation(resource_id: str, patient_id: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


@pytest.fixture
def written(client: TestClient) -> TestClient:
    """Alice (two versions, two observations, one of them deleted) and Bob (one)."""
    for resource in (
        _patient("alice", "Tremblay"),
        _observation("alice-weight", "alice", "poids"),
        _observation("alice-height", "alice", "taille"),
        _patient("bob", "Gagnon"),
        _observation("bob-weight", "bob", "poids"),
        {**_patient("alice", "Tremblay"), "birthDate": "1984-02-29"},
    ):
        put_resource(client, resource)
    assert client.delete("/fhir/Observation/alice-height").status_code == 204
    assert client.get("/fhir/Patient/alice").status_code == 200  # cached keys, read leaves
    return client


def _gone(response: httpx.Response) -> None:
    assert response.status_code == 410, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "deleted"
    assert "erased by Coffre on" in issue["diagnostics"]
    assert "Tremblay" not in response.text


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [entry["resource"]["id"] for entry in response.json().get("entry", [])]


def test_every_interaction_with_an_erased_patient_answers_410(
    written: TestClient, records: RecordStore
) -> None:
    erasure = erase_patient(records, "alice", DPO)
    records.storage.purge_erased()
    assert erasure.records == 3
    for url in (
        "/fhir/Patient/alice",
        "/fhir/Patient/alice/_history/1",
        "/fhir/Patient/alice/_history",
        "/fhir/Observation/alice-weight",
        "/fhir/Observation/alice-weight/_history",
        "/fhir/Observation/alice-height/_history/1",
        "/fhir/Observation/alice-height",
        "/fhir/Patient/alice/$everything",
        "/fhir/Patient/alice/$access-history",
    ):
        _gone(written.get(url))
    _gone(written.put("/fhir/Patient/alice", json=_patient("alice", "Tremblay"), headers=FHIR_JSON))
    _gone(written.delete("/fhir/Observation/alice-weight"))
    new = _observation("alice-bp", "alice", "tension")
    _gone(written.put("/fhir/Observation/alice-bp", json=new, headers=FHIR_JSON))


def test_searches_and_histories_leave_an_erased_patient_out(
    written: TestClient, records: RecordStore
) -> None:
    queries = (
        "Patient?_id=alice",
        "Patient?identifier=urn:test|alice",
        "Patient?family=Tremblay",
        "Observation?subject=Patient/alice",
        "Observation?_id=alice-weight,bob-weight",
        "Observation?code:text=poids",
        "Observation?code:text=poids&_include=Observation:subject",
        "Patient?_revinclude=Observation:subject",
        "Patient?_id=alice&_total=accurate",
    )
    histories = ("/fhir/_history", "/fhir/Patient/_history", "/fhir/Observation/_history")
    for query in queries:  # each of them finds Alice's records before
        assert any("alice" in i for i in _ids(written.get(f"/fhir/{query}"))), query
    erase_patient(records, "alice", DPO)
    for query in queries:
        assert all("alice" not in i for i in _ids(written.get(f"/fhir/{query}"))), query
    assert _ids(written.get("/fhir/Observation?code:text=poids")) == ["bob-weight"]
    for url in histories:
        response = written.get(url)
        assert response.status_code == 200 and response.json()["entry"], url
        assert "alice" not in response.text, url
    assert [s.id for s in records.all_of_type("Patient")] == ["bob"]


def test_other_patients_are_untouched(written: TestClient, records: RecordStore) -> None:
    erase_patient(records, "alice", DPO)
    assert written.get("/fhir/Patient/bob").json()["name"] == [{"family": "Gagnon"}]
    assert _ids(written.get("/fhir/Patient/bob/$everything")) == ["bob", "bob-weight"]
    assert _ids(written.get("/fhir/Observation?subject=Patient/bob")) == ["bob-weight"]
    assert len(written.get("/fhir/Patient/bob/$access-history").json()["entry"]) > 0
    put_resource(written, {**_patient("bob", "Gagnon"), "gender": "male"})
    assert written.get("/fhir/Patient/bob/_history").json()["total"] == 2


def test_the_log_records_the_erasure_and_still_verifies(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    before = records.storage.leaf_count()
    erase_patient(records, "alice", DPO)
    records.storage.purge_erased()
    leaves = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    comp = records.keys.patient_compartment("alice")
    assert [leaf.kind for leaf in leaves] == [LeafKind.ERASE] * 4
    assert (leaves[0].loc, leaves[0].version) == (comp, 0)
    alice = records.keys.location("Patient", "alice")
    assert any(leaf.loc == alice and leaf.version == 2 for leaf in leaves[1:])
    report = audit_log(written, records.ledger.verifier_key, None, full=True)
    assert report.consistent and not report.violations
    records.storage.close()
    reopened = vault.open()  # the start checks: not rolled back, the map root
    try:
        with pytest.raises(FhirError, match="erased by Coffre"):
            reopened.read("Patient", "alice")
        assert reopened.read("Patient", "bob").version == 1
    finally:
        reopened.storage.close()


def test_the_erasure_is_audited_in_the_gateway_s_compartment(
    written: TestClient, records: RecordStore
) -> None:
    erase_patient(records, "alice", DPO)
    shared = records.keys.shared_compartment("AuditEvent")
    newest = records.storage.events_of(shared)[0]
    event = json.loads(records._open_event(newest, records.committed_key))
    assert validate(event) == "AuditEvent"
    assert event["action"] == "D" and event["outcomeDesc"] == ERASURE
    assert event["agent"][0]["who"] == {"display": DPO.who}
    assert event["purposeOfEvent"] == [{"text": DPO.reason}]
    assert event["entity"] == [{"what": {"reference": "Patient/alice"}}]


def test_a_patient_that_does_not_exist_or_was_erased_is_refused(
    written: TestClient, records: RecordStore
) -> None:
    leaves = records.storage.leaf_count()
    with pytest.raises(FhirError, match="does not exist") as missing:
        erase_patient(records, "nobody", DPO)
    assert missing.value.status == 404
    assert records.storage.leaf_count() == leaves
    erase_patient(records, "alice", DPO)
    with pytest.raises(FhirError, match="erased by Coffre") as again:
        erase_patient(records, "alice", DPO)
    assert again.value.status == 410


def test_a_patient_known_only_by_records_of_their_compartment_can_be_erased(
    written: TestClient, records: RecordStore
) -> None:
    """Observations of Patient/carol were loaded, Patient/carol never was: her records
    are health data of hers all the same."""
    put_resource(written, _observation("carol-weight", "carol", "poids"))
    erasure = erase_patient(records, "carol", DPO)
    assert erasure.records == 1
    _gone(written.get("/fhir/Observation/carol-weight"))
    assert _ids(written.get("/fhir/Observation?subject=Patient/carol")) == []
    assert written.get("/fhir/Observation/bob-weight").status_code == 200


def _task(resource_id: str, patient_id: str, focus: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": resource_id,
        "status": "requested",
        "intent": "order",
        "description": "rappel du vaccin",
        "for": {"reference": f"Patient/{patient_id}"},
    }
    if focus is not None:
        task["focus"] = {"reference": f"Patient/{focus}"}
    return task


def test_records_outside_the_compartment_naming_only_the_patient_are_erased_with_them(
    written: TestClient, records: RecordStore
) -> None:
    """A Task for Alice, a Device of hers: sealed in her compartment, shredded with it;
    a Task naming Alice and Bob stays under the shared key, for Bob."""
    device = {
        "resourceType": "Device",
        "id": "alice-pump",
        "patient": {"reference": "Patient/alice"},
    }
    for resource in (_task("alice-task", "alice"), device, _task("both-task", "bob", "alice")):
        put_resource(written, resource)
    assert _ids(written.get("/fhir/Task?subject=Patient/alice")) == ["alice-task"]
    erasure = erase_patient(records, "alice", DPO)
    assert erasure.records == 5
    for url in (
        "/fhir/Task/alice-task",
        "/fhir/Task/alice-task/_history/1",
        "/fhir/Device/alice-pump",
    ):
        _gone(written.get(url))
    assert _ids(written.get("/fhir/Task?subject=Patient/alice")) == []
    assert _ids(written.get("/fhir/Device")) == []
    assert _ids(written.get("/fhir/Task")) == ["both-task"]
    shared = records.keys.shared_compartment("Task")
    assert records.storage.latest(records.keys.location("Task", "both-task")).comp == shared


def test_a_binary_whose_security_context_is_the_patient_is_erased_with_them(
    written: TestClient, records: RecordStore
) -> None:
    """A scanned letter about Alice takes her access rules (binary.html): sealed in her
    compartment, shredded with it; a Binary of nobody's stays."""
    letter = {
        "resourceType": "Binary",
        "id": "alice-letter",
        "contentType": "application/pdf",
        "securityContext": {"reference": "Patient/alice"},
        "data": "JVBERi0xLjQK",
    }
    leaflet = {"resourceType": "Binary", "id": "leaflet", "contentType": "text/plain"}
    for resource in (letter, leaflet):
        put_resource(written, resource)
    alice = records.keys.patient_compartment("alice")
    assert records.storage.latest(records.keys.location("Binary", "alice-letter")).comp == alice

    erase_patient(records, "alice", DPO)

    _gone(written.get("/fhir/Binary/alice-letter", headers={"Accept": "application/fhir+json"}))
    assert written.get("/fhir/Binary/leaflet").status_code == 200


def test_a_record_of_several_patients_outlives_the_erasure_of_one(
    written: TestClient, records: RecordStore
) -> None:
    """A Group of Alice and Bob is sealed under the Group type's shared key: Bob's record
    as much as Alice's, it stays, in Bob's compartment."""
    members = [{"entity": {"reference": f"Patient/{p}"}} for p in ("alice", "bob")]
    group = {"resourceType": "Group", "id": "pair", "type": "person", "actual": True}
    put_resource(written, {**group, "member": members})
    shared = records.keys.shared_compartment("Group")
    assert records.storage.latest(records.keys.location("Group", "pair")).comp == shared
    assert "pair" in _ids(written.get("/fhir/Patient/alice/$everything"))
    erase_patient(records, "alice", DPO)
    assert written.get("/fhir/Group/pair").status_code == 200
    assert sorted(_ids(written.get("/fhir/Patient/bob/$everything"))) == [
        "bob",
        "bob-weight",
        "pair",
    ]


@pytest.fixture
def other_gateway(vault: Vault, records: RecordStore) -> Iterator[RecordStore]:
    """A second gateway process on the same vault, started before the erasure."""
    second = vault.open()
    yield second
    second.storage.close()


def test_a_running_gateway_stops_serving_at_its_next_request(
    written: TestClient, records: RecordStore, other_gateway: RecordStore
) -> None:
    assert other_gateway.read("Patient", "alice").version == 2  # its data key now cached
    comp = records.keys.patient_compartment("alice")
    assert comp in other_gateway._data_keys
    erase_patient(records, "alice", DPO)
    with TestClient(create_app(other_gateway), raise_server_exceptions=False) as second:
        _gone(second.get("/fhir/Patient/alice/_history/2"))
        assert comp not in other_gateway._data_keys  # the cached key is dropped
        _gone(second.get("/fhir/Observation/alice-weight"))
        assert "alice" not in second.get("/fhir/_history").text
        assert _ids(second.get("/fhir/Observation?_id=alice-weight")) == []
        _gone(second.put("/fhir/Patient/alice", json=_patient("alice", "T"), headers=FHIR_JSON))


def test_a_key_the_host_deletes_is_an_integrity_failure_not_an_erasure(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    comp = records.keys.patient_compartment("alice")
    with HostDatabase.of(vault) as db:
        db.execute("DELETE FROM data_keys WHERE comp = ?", (comp,))
    records.storage.close()
    reopened = vault.open()
    try:
        with pytest.raises(SealError):
            reopened.read("Patient", "alice")
        with TestClient(create_app(reopened), raise_server_exceptions=False) as fresh:
            response = fresh.get("/fhir/Observation/alice-weight")
            assert response.status_code == 500 and "integrity" in response.text
    finally:
        reopened.storage.close()


def test_a_host_that_hides_the_key_or_alters_a_record_does_not_block_the_erasure(
    written: TestClient, records: RecordStore, vault: Vault
) -> None:
    """The log's record of Alice's key says she exists, so hiding the key's row does not
    make her unknown; a record whose bytes the host altered gets no ERASE leaf and is
    counted. Once the host puts both back, they answer 410 like the others."""
    comp = records.keys.patient_compartment("alice")
    weight = records.keys.location("Observation", "alice-weight")
    with HostDatabase.of(vault) as db:
        (kek, wrapped) = db.execute(
            "SELECT kek_id, wrapped FROM data_keys WHERE comp = ?", (comp,)
        ).fetchone()
        (body,) = db.execute(
            "SELECT body FROM versions WHERE loc = ? AND version = 1", (weight,)
        ).fetchone()
        db.execute("DELETE FROM data_keys WHERE comp = ?", (comp,))
        db.execute(
            "UPDATE versions SET body = ? WHERE loc = ? AND version = 1",
            (bytes(body)[:-1] + bytes([bytes(body)[-1] ^ 1]), weight),
        )
    erasure = erase_patient(records, "alice", DPO)
    assert (erasure.records, erasure.tampered) == (2, 1)  # her Patient and deleted height
    _gone(written.get("/fhir/Patient/alice"))
    with HostDatabase.of(vault) as db:
        db.execute(
            "INSERT INTO data_keys (comp, kek_id, wrapped) VALUES (?, ?, ?)", (comp, kek, wrapped)
        )
        db.execute("UPDATE versions SET body = ? WHERE loc = ? AND version = 1", (body, weight))
    _gone(written.get("/fhir/Observation/alice-weight"))
    _gone(written.get("/fhir/Patient/alice"))
    assert audit_log(written, records.ledger.verifier_key, None, full=True).consistent
