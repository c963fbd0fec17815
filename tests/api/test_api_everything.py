"""``Patient/$everything``: the patient's records, those outside the compartment that name
them included, and beside each page the resources its records refer to (R4
patient-operation-everything: "whatever resources are needed to support the records")."""

from __future__ import annotations

from typing import Any

from conftest import put_resource
from starlette.testclient import TestClient

from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore


def _ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


SHARED = [
    {"resourceType": "Organization", "id": "clinic", "name": "Clinique du Lac"},
    {"resourceType": "Organization", "id": "maker", "name": "Laboratoires Boréal"},
    {"resourceType": "Organization", "id": "unrelated", "name": "Hôpital Sainte-Anne"},
    {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Lavoie"}]},
    {"resourceType": "Practitioner", "id": "nurse", "name": [{"family": "Roy"}]},
    {"resourceType": "Location", "id": "ward", "managingOrganization": _ref("Organization/clinic")},
    {"resourceType": "Medication", "id": "insulin", "manufacturer": _ref("Organization/maker")},
    {"resourceType": "Device", "id": "monitor", "status": "active"},
]
"""Shared resources: each but ``unrelated`` supports one of Alice's records, directly or
through another (the ward's organisation, the medication's maker)."""


def _patient(pid: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": pid.title()}], **more}


def _records() -> list[dict[str, Any]]:
    alice = _ref("Patient/alice")
    return [
        _patient("alice", generalPractitioner=[_ref("Practitioner/gp")]),
        _patient("bob"),
        {
            "resourceType": "Encounter",
            "id": "visit",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": alice,
            "location": [{"location": _ref("Location/ward")}],
        },
        {
            "resourceType": "Observation",
            "id": "glucose",
            "status": "final",
            "code": {"text": "glucose"},
            "subject": alice,
            "performer": [_ref("Practitioner/nurse")],
            "device": _ref("Device/bob-pump"),
        },
        {
            "resourceType": "MedicationRequest",
            "id": "prescription",
            "status": "active",
            "intent": "order",
            "subject": alice,
            "medicationReference": _ref("Medication/insulin"),
        },
        {"resourceType": "Device", "id": "alice-pump", "status": "active", "patient": alice},
        {
            "resourceType": "Device",
            "id": "bob-pump",
            "status": "active",
            "patient": _ref("Patient/bob"),
        },
        {
            "resourceType": "Task",
            "id": "call-back",
            "status": "requested",
            "intent": "order",
            "for": alice,
        },
        {
            "resourceType": "Task",
            "id": "bob-task",
            "status": "requested",
            "intent": "order",
            "for": _ref("Patient/bob"),
        },
    ]


def _load(client: TestClient) -> None:
    for resource in [*SHARED, *_records()]:
        put_resource(client, resource)


def _everything(client: TestClient, query: str = "") -> dict[str, Any]:
    response = client.get(f"/fhir/Patient/alice/$everything{query}")
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def _refs(bundle: dict[str, Any], mode: str) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    ]


MATCHES = {
    "Patient/alice",
    "Encounter/visit",
    "Observation/glucose",
    "MedicationRequest/prescription",
    "Device/alice-pump",
    "Task/call-back",
}
SUPPORT = {
    "Practitioner/gp",
    "Practitioner/nurse",
    "Location/ward",
    "Organization/clinic",
    "Medication/insulin",
    "Organization/maker",
}


def test_everything_holds_the_records_naming_the_patient_and_what_supports_them(
    client: TestClient,
) -> None:
    _load(client)
    bundle = _everything(client)
    matches, support = _refs(bundle, "match"), _refs(bundle, "include")
    assert matches[0] == "Patient/alice" and set(matches) == MATCHES
    assert len(support) == len(set(support)) and set(support) == SUPPORT
    assert bundle["total"] == len(MATCHES)


def test_bob_s_records_are_not_alice_s_even_when_hers_refer_to_them(client: TestClient) -> None:
    """Alice's glucose was measured on Bob's pump: the pump is Bob's record, not hers."""
    _load(client)
    bob = _refs(client.get("/fhir/Patient/bob/$everything").json(), "match")
    assert set(bob) == {"Patient/bob", "Device/bob-pump", "Task/bob-task"}
    every = _refs(_everything(client), "match") + _refs(_everything(client), "include")
    assert not {"Device/bob-pump", "Task/bob-task", "Patient/bob"} & set(every)


def test_type_narrows_the_records_and_what_comes_with_them(client: TestClient) -> None:
    _load(client)
    only = _everything(client, "?_type=Observation,Task")
    assert set(_refs(only, "match")) == {"Observation/glucose", "Task/call-back"}
    assert _refs(only, "include") == []
    with_nurse = _everything(client, "?_type=Observation,Practitioner")
    assert _refs(with_nurse, "match") == ["Observation/glucose"]
    assert _refs(with_nurse, "include") == ["Practitioner/nurse"]
    assert _refs(_everything(client, "?_type=Practitioner"), "include") == []


def test_each_page_brings_what_its_own_records_refer_to(client: TestClient) -> None:
    _load(client)
    matches: list[str] = []
    support: set[str] = set()
    url: str | None = "/fhir/Patient/alice/$everything?_count=2"
    while url is not None:
        page = client.get(url).json()
        records = {e["resource"]["id"]: e["resource"] for e in page["entry"]}
        for entry in page["entry"]:
            if entry["search"]["mode"] == "include":
                referred = f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
                assert any(
                    referred in str(r) for r in records.values() if r is not entry["resource"]
                )
        matches += _refs(page, "match")
        support |= set(_refs(page, "include"))
        url = next((k["url"] for k in page["link"] if k["relation"] == "next"), None)
    assert sorted(matches) == sorted(MATCHES) and support == SUPPORT


def test_a_deleted_supporting_resource_is_left_out(client: TestClient) -> None:
    _load(client)
    assert client.delete("/fhir/Practitioner/nurse").status_code in (200, 204)
    assert set(_refs(_everything(client), "include")) == SUPPORT - {"Practitioner/nurse"}


def test_what_comes_with_the_records_is_logged_as_handed_out(
    client: TestClient, records: RecordStore
) -> None:
    _load(client)
    before = records.storage.leaf_count()
    _everything(client)
    logged = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    searched = {leaf.loc for leaf in logged if leaf.kind is LeafKind.SEARCH}
    for reference in MATCHES | SUPPORT:
        assert records.keys.location(*reference.split("/")) in searched, reference
