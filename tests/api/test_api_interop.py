"""Third-party FHIR clients (fhirpy, fhirclient) against a real ``coffre serve``.

The server runs in a subprocess: what it stored is checked with plain HTTP GETs. Starting
a server takes seconds, so each client's whole round trip is one test.
"""

from __future__ import annotations

from typing import Any

import fhirpy
import httpx
import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound

SYSTEM = "urn:coffre:test:mrn"


def fetch(base_url: str, path: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{base_url}/{path}", params=params, headers={"Accept": "application/fhir+json"}, timeout=10
    )


def current(base_url: str, path: str) -> dict[str, Any]:
    response = fetch(base_url, path)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_fhirpy_round_trip(server: Any) -> None:
    base = server.base_url
    fhir = fhirpy.SyncFHIRClient(base)

    # create
    alice = fhir.resource(
        "Patient",
        identifier=[{"system": SYSTEM, "value": "fp-1"}],
        gender="female",
        birthDate="1980-02-29",
    )
    alice.save()
    assert alice.id
    assert alice["meta"]["versionId"] == "1"
    stored = fetch(base, f"Patient/{alice.id}")
    assert stored.status_code == 200
    assert stored.headers["etag"] == 'W/"1"'
    assert stored.json()["birthDate"] == "1980-02-29"

    # read, by id and by search
    assert fhir.get("Patient", alice.id)["gender"] == "female"
    assert fhir.reference("Patient", alice.id).to_resource()["birthDate"] == "1980-02-29"
    assert fhir.resources("Patient").search(_id=alice.id).get().id == alice.id
    found = fhir.resources("Patient").search(identifier=f"{SYSTEM}|fp-1").fetch()
    assert [p.id for p in found] == [alice.id]

    # update
    alice["gender"] = "other"
    alice.save()
    assert alice["meta"]["versionId"] == "2"
    assert current(base, f"Patient/{alice.id}")["gender"] == "other"
    alice.refresh()
    assert alice["meta"]["versionId"] == "2"

    # history
    history = alice.execute("_history", "get")
    assert history["type"] == "history"
    assert history["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert fhir.execute(f"Patient/{alice.id}/_history/1", method="get")["gender"] == "female"

    # conditional create: fhirpy sends POST Patient?identifier=...
    again, created = (
        fhir.resources("Patient")
        .search(identifier=f"{SYSTEM}|fp-1")
        .get_or_create(fhir.resource("Patient", identifier=[{"system": SYSTEM, "value": "fp-1"}]))
    )
    assert (again.id, created) == (alice.id, False)
    bob, created = (
        fhir.resources("Patient")
        .search(identifier=f"{SYSTEM}|fp-2")
        .get_or_create(fhir.resource("Patient", identifier=[{"system": SYSTEM, "value": "fp-2"}]))
    )
    assert created is True
    assert bob.id != alice.id
    assert current(base, "Patient")["total"] == 2

    # conditional update: PUT Patient?identifier=...
    updated, created = (
        fhir.resources("Patient")
        .search(identifier=f"{SYSTEM}|fp-2")
        .update(
            fhir.resource(
                "Patient", identifier=[{"system": SYSTEM, "value": "fp-2"}], gender="male"
            )
        )
    )
    assert (updated.id, created) == (bob.id, False)
    assert current(base, f"Patient/{bob.id}")["meta"]["versionId"] == "2"

    # a search fhirpy pages through by following next links
    for n in range(3, 6):
        fhir.resource("Patient", identifier=[{"system": SYSTEM, "value": f"fp-{n}"}]).save()
    everyone = list(fhir.resources("Patient").search(identifier=f"{SYSTEM}|").limit(2))
    assert len(everyone) == 5
    assert len({p.id for p in everyone}) == 5
    with pytest.raises(MultipleResourcesFound):
        fhir.resources("Patient").search(identifier=f"{SYSTEM}|").get()

    # transaction, POSTed to the base
    urn = "urn:uuid:7b3c0d2e-0000-4000-8000-000000000001"
    answer = fhir.execute(
        "/",
        method="post",
        data={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": urn,
                    "resource": {
                        "resourceType": "Patient",
                        "identifier": [{"system": SYSTEM, "value": "fp-tx"}],
                    },
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "weight"},
                        "subject": {"reference": urn},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        },
    )
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created", "201 Created"]
    patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
    observation_id = answer["entry"][1]["response"]["location"].split("/")[1]
    assert current(base, f"Observation/{observation_id}")["subject"] == {
        "reference": f"Patient/{patient_id}"
    }

    # delete
    alice.delete()
    assert fetch(base, f"Patient/{alice.id}").status_code == 410
    with pytest.raises(ResourceNotFound):
        fhir.get("Patient", alice.id)
    assert fetch(base, f"Patient/{alice.id}/_history/2").status_code == 200


def test_fhirclient_round_trip(server: Any) -> None:
    base = server.base_url
    smart = smart_client.FHIRClient(settings={"app_id": "coffre-test", "api_base": base})

    # the CapabilityStatement parses with fhirclient's strict models
    smart.server.get_capability()
    capability = smart.server.capabilityStatement
    assert capability.fhirVersion == "4.0.1"
    assert capability.kind == "instance"
    patient_rest = next(r for r in capability.rest[0].resource if r.type == "Patient")
    assert {i.code for i in patient_rest.interaction} >= {
        "read",
        "vread",
        "update",
        "delete",
        "create",
        "search-type",
    }
    assert smart.ready

    # create
    created = Patient(
        {
            "identifier": [{"system": SYSTEM, "value": "fc-1"}],
            "gender": "male",
            "name": [{"family": "Gagnon"}],
        }
    ).create(smart.server)
    assert created is not None
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"
    assert current(base, f"Patient/{pid}")["name"] == [{"family": "Gagnon"}]

    # read
    patient = Patient.read(pid, smart.server)
    assert patient.id == pid
    assert patient.gender == "male"
    assert patient.identifier[0].value == "fc-1"
    assert patient.meta.versionId == "1"

    # update
    patient.gender = "female"
    updated = patient.update()
    assert updated["meta"]["versionId"] == "2"
    stored = fetch(base, f"Patient/{pid}")
    assert stored.headers["etag"] == 'W/"2"'
    assert stored.json()["gender"] == "female"

    # a resource that references it
    observation = Observation(
        {
            "status": "final",
            "code": {"text": "heart rate"},
            "subject": {"reference": f"Patient/{pid}"},
            "valueQuantity": {"value": 72, "unit": "/min"},
        }
    )
    obs = observation.create(smart.server)
    assert obs is not None
    read_back = Observation.read(obs["id"], smart.server)
    assert read_back.subject.reference == f"Patient/{pid}"
    assert read_back.valueQuantity.value == 72

    # search
    found = list(
        Patient.where({"identifier": f"{SYSTEM}|fc-1"}).perform_resources_iter(smart.server)
    )
    assert [p.id for p in found] == [pid]

    # delete
    patient.delete()
    assert fetch(base, f"Patient/{pid}").status_code == 410
    with pytest.raises(requests.HTTPError) as gone:
        Patient.read(pid, smart.server)
    assert gone.value.response.status_code == 410
    assert (
        list(Patient.where({"identifier": f"{SYSTEM}|fc-1"}).perform_resources_iter(smart.server))
        == []
    )
    history = current(base, f"Patient/{pid}/_history")
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
