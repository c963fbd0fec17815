"""``$validate``: a resource checked as a create or an update would check it, 200 and an
OperationOutcome either way, nothing written; a 4xx only when it cannot be checked."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FHIR_JSON
from minted import bearer
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.auth import Authority
from coffre.service import RecordStore

VALID = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-02-01"}
INVALID = {"resourceType": "Patient", "gender": "woman"}


def _parameters(resource: Any, **more: str) -> dict[str, Any]:
    parameter: list[dict[str, Any]] = [{"name": "resource", "resource": resource}]
    parameter += [{"name": "mode", "valueCode": mode} for mode in more.values()]
    return {"resourceType": "Parameters", "parameter": parameter}


def _issue(client: TestClient, url: str, body: Any) -> dict[str, Any]:
    response = client.post(f"/fhir/{url}", json=body, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    (issue,) = response.json()["issue"]
    found: dict[str, Any] = issue
    return found


@pytest.mark.parametrize(
    "url, body",
    [
        ("Patient/$validate", VALID),
        ("Patient/$validate", _parameters(VALID)),
        ("Patient/p1/$validate", VALID),
        ("Patient/$validate", _parameters(VALID, mode="update")),
        ("Patient/$validate?mode=update", VALID),
        ("Patient/p1/$validate", _parameters(VALID, mode="create")),
    ],
)
def test_a_valid_resource_is_said_valid(client: TestClient, url: str, body: Any) -> None:
    issue = _issue(client, url, body)
    assert (issue["severity"], issue["code"]) == ("information", "informational"), issue


@pytest.mark.parametrize(
    "url, body, expression, words",
    [
        ("Patient/$validate", INVALID, "Patient.gender", "must be one of"),
        ("Patient/$validate", _parameters(INVALID), "Patient.gender", "must be one of"),
        ("Patient/p2/$validate", VALID, "Patient.id", "differs from the id in the URL 'p2'"),
        (
            "Patient/$validate",
            _parameters({**VALID, "id": None}, mode="update"),
            "Patient.id",
            "",
        ),
        (
            "Patient/$validate?mode=update",
            {"resourceType": "Patient"},
            "Patient.id",
            "has no id, which an update carries",
        ),
        (
            "Observation/$validate",
            {"resourceType": "Observation", "status": "final"},
            "Observation.code",
            "is missing",
        ),
    ],
)
def test_an_invalid_resource_is_answered_200_with_the_rule_it_breaks(
    client: TestClient, url: str, body: Any, expression: str, words: str
) -> None:
    issue = _issue(client, url, body)
    assert issue["severity"] == "error" and issue["expression"] == [expression], issue
    assert words in issue["diagnostics"]


def test_the_verdict_is_the_write_s(client: TestClient) -> None:
    """What $validate refuses, the create refuses with the same issue; what it takes, the
    create takes."""
    for body in (INVALID, VALID):
        issue = _issue(client, "Patient/$validate", body)
        created = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
        if issue["severity"] == "error":
            assert created.status_code == 422
            (refused,) = created.json()["issue"]
            assert refused["expression"] == issue["expression"]
        else:
            assert created.status_code == 201


@pytest.mark.parametrize(
    "url, body, status, words",
    [
        ("Patient/$validate", [1, 2], 400, "must be a JSON object"),
        ("Patient/$validate", {"resourceType": "Observation"}, 400, "the URL names Patient"),
        ("Patient/$validate", _parameters(VALID, mode="delete"), 400, "not mode 'delete'"),
        (
            "Patient/$validate",
            {**_parameters(VALID), "parameter": [{"name": "profile", "valueUri": "http://x"}]},
            400,
            "one resource",
        ),
        (
            "Patient/$validate",
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": VALID},
                    {"name": "profile", "valueUri": "http://example.org/StructureDefinition/x"},
                ],
            },
            400,
            "base FHIR R4 (4.0.1) specification only",
        ),
        (
            "Patient/$validate",
            {"resourceType": "Parameters", "parameter": 5},
            400,
            "a list of objects",
        ),
        (
            "Patient/$validate",
            {"resourceType": "Parameters", "parameter": [{"name": "resource"}]},
            400,
            "$validate's resource is one resource alone",
        ),
        (
            "Patient/$validate",
            {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": 5}]},
            400,
            "$validate's mode is one valueCode alone",
        ),
        (
            "Patient/$validate",
            {**_parameters(VALID), "parameter": [*_parameters(VALID)["parameter"]] * 2},
            400,
            "each once",
        ),
        ("Patient/$validate?profile=http://x", VALID, 400, "does not support profile"),
        ("Patient/bad%20id/$validate", VALID, 400, "id"),
        ("Nothing/$validate", VALID, 404, "no resource type 'Nothing'"),
    ],
)
def test_what_cannot_be_checked_is_a_4xx_that_says_why(
    client: TestClient, url: str, body: Any, status: int, words: str
) -> None:
    response = client.post(f"/fhir/{url}", json=body, headers=FHIR_JSON)
    assert response.status_code == status, response.text
    (issue,) = response.json()["issue"]
    assert words in issue["diagnostics"], issue


def test_nothing_is_written_or_logged(client: TestClient, records: RecordStore) -> None:
    before = records.storage.leaf_count()
    for body in (VALID, INVALID):
        _issue(client, "Patient/p1/$validate", body)
    assert records.storage.leaf_count() == before
    assert client.get("/fhir/Patient/p1").status_code == 404
    assert client.get("/fhir/Patient/p1/$validate").status_code == 405


def test_the_capability_statement_offers_it(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    for resource in statement["rest"][0]["resource"]:
        assert "validate" in {op["name"] for op in resource["operation"]}, resource["type"]


def test_it_takes_the_scope_of_the_write_it_checks(records: RecordStore) -> None:
    authority = Authority.ephemeral()
    with TestClient(create_app(records, authority=authority)) as client:
        reader = bearer(authority, "clinician", "Practitioner/dr", "user/*.rs")
        creator = bearer(authority, "clinician", "Practitioner/dr", "user/*.rs user/Patient.c")
        url = "/fhir/Patient/$validate"
        assert client.post(url, json=VALID, headers={**reader, **FHIR_JSON}).status_code == 403
        assert client.post(url, json=VALID, headers={**creator, **FHIR_JSON}).status_code == 200
        update = {**creator, **FHIR_JSON}
        assert (
            client.post("/fhir/Patient/p1/$validate", json=VALID, headers=update).status_code == 403
        )
