"""Who may export: only the system scopes of a token count, at kick-off and at each
download, and the manifest says that the files need a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smart import FHIR_BASE, ORIGIN, authority_at, client_for
from starlette.testclient import TestClient

from coffre.api.auth import Authority
from coffre.service import RecordStore

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _bearer(authority: Authority, **claims: Any) -> dict[str, str]:
    base = {"iss": f"{ORIGIN}/auth", "aud": FHIR_BASE, "client_id": "exporter", "sub": "exporter"}
    return {"Authorization": f"Bearer {authority.signer.sign({**base, **claims}, 300)}"}


@pytest.fixture
def secured(records: RecordStore, tmp_path: Path) -> Iterator[tuple[TestClient, Authority]]:
    with records.writer() as writer:
        writer.update("Patient", "ana", {"resourceType": "Patient", "id": "ana"})
        org = {"resourceType": "Organization", "id": "org", "name": "Clinique du Lac"}
        writer.update("Organization", "org", org)
    authority = authority_at(tmp_path)
    with client_for(records, authority) as client:
        yield client, authority


def _manifest(client: TestClient, status_url: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(200):
        response = client.get(status_url, headers=headers)
        if response.status_code == 200:
            found: dict[str, Any] = response.json()
            return found
        assert response.status_code == 202, response.text
    raise AssertionError("the export never finished")


def test_a_backend_service_with_system_read_scopes_exports(
    secured: tuple[TestClient, Authority],
) -> None:
    client, authority = secured
    system = _bearer(authority, role="system", scope="system/*.rs")
    assert client.get("/fhir/$export", headers=ASYNC).status_code == 401
    kick_off = client.get("/fhir/$export", headers={**ASYNC, **system})
    assert kick_off.status_code == 202, kick_off.text
    status_url = kick_off.headers["content-location"]
    assert client.get(status_url).status_code == 401
    patient = _bearer(authority, role="patient", patient="ana", scope="patient/*.rs")
    assert client.get(status_url, headers=patient).status_code == 403
    assert client.delete(status_url, headers=patient).status_code == 403
    found = _manifest(client, status_url, system)
    assert found["requiresAccessToken"] is True
    for output in found["output"]:
        assert client.get(output["url"]).status_code == 401
        assert client.get(output["url"], headers=system).status_code == 200
        narrow = _bearer(authority, role="system", scope="system/Organization.rs")
        expected = 200 if output["type"] == "Organization" else 403
        assert client.get(output["url"], headers=narrow).status_code == expected


def test_only_the_client_that_started_an_export_reaches_it(
    secured: tuple[TestClient, Authority],
) -> None:
    """Another client, with the same system scopes, neither polls, cancels nor downloads
    an export it did not start: to it the URLs name no export."""
    client, authority = secured
    system = _bearer(authority, role="system", scope="system/*.rs")
    other = _bearer(authority, role="system", scope="system/*.rs", client_id="other")
    kick_off = client.get("/fhir/$export?_type=Patient", headers={**ASYNC, **system})
    status_url = kick_off.headers["content-location"]
    refused = client.get(status_url, headers=other)
    assert refused.status_code == 404
    assert "client that started it" in refused.json()["issue"][0]["diagnostics"]
    assert client.delete(status_url, headers=other).status_code == 404
    found = _manifest(client, status_url, system)
    assert client.get(found["output"][0]["url"], headers=other).status_code == 404
    assert client.get(found["output"][0]["url"], headers=system).status_code == 200
    assert client.delete(status_url, headers=system).status_code == 202


NONE = "may export none of these types: a bulk export needs a system scope"


@pytest.mark.parametrize(
    ("path", "claims", "said"),
    [
        (  # not every type
            "$export",
            {"role": "system", "scope": "system/Patient.rs"},
            "may not export Account, ActivityDefinition, AdverseEvent, AllergyIntolerance,"
            " Appointment and 140 more: ask for the other types with _type",
        ),
        ("$export?_type=Patient", {"role": "system", "scope": "system/Patient.s"}, NONE),
        ("$export?_type=Patient", {"role": "admin", "scope": "user/*.rs"}, NONE),
        (
            "Patient/$export",
            {"role": "clinician", "fhirUser": "Practitioner/x", "scope": "user/*.rs"},
            NONE,
        ),
        ("Patient/$export", {"role": "patient", "patient": "ana", "scope": "patient/*.rs"}, NONE),
        (
            "Group/nope/$export",
            {"role": "patient", "patient": "ana", "scope": "patient/*.rs"},
            NONE,
        ),
    ],
)
def test_other_tokens_are_refused_before_anything_is_read(
    secured: tuple[TestClient, Authority], path: str, claims: dict[str, str], said: str
) -> None:
    """The refusal says what would do instead: it used to name Account, whatever the
    token and the export."""
    client, authority = secured
    response = client.get(f"/fhir/{path}", headers={**ASYNC, **_bearer(authority, **claims)})
    assert response.status_code == 403, response.text
    assert said in response.json()["issue"][0]["diagnostics"]


def test_a_groups_export_needs_to_read_the_group(
    secured: tuple[TestClient, Authority], records: RecordStore
) -> None:
    """Whose records a Group's export holds says who its members are: a token that may not
    read Groups learns neither that, nor whether the Group exists."""
    members = [{"entity": {"reference": "Patient/ana"}}]
    group = {"resourceType": "Group", "type": "person", "actual": True, "member": members}
    with records.writer() as writer:
        writer.update("Group", "cohort", {**group, "id": "cohort"})
    client, authority = secured
    patients_only = _bearer(authority, role="system", scope="system/Patient.rs")
    status = {}
    for group_id in ("cohort", "nope"):
        url = f"/fhir/Group/{group_id}/$export?_type=Patient"
        status[group_id] = client.get(url, headers={**ASYNC, **patients_only}).status_code
    assert status == {"cohort": 403, "nope": 403}
    both = _bearer(authority, role="system", scope="system/Patient.rs system/Group.rs")
    kick_off = client.get("/fhir/Group/cohort/$export?_type=Patient", headers={**ASYNC, **both})
    assert kick_off.status_code == 202, kick_off.text
    status_url = kick_off.headers["content-location"]
    assert client.get(status_url, headers=patients_only).status_code == 403
    found = _manifest(client, status_url, both)
    assert client.get(found["output"][0]["url"], headers=patients_only).status_code == 403
    assert client.get(found["output"][0]["url"], headers=both).status_code == 200


def test_system_scopes_of_some_types_export_those_types(
    secured: tuple[TestClient, Authority],
) -> None:
    client, authority = secured
    narrow = _bearer(authority, role="system", scope="system/Patient.rs system/Group.rs")
    kick_off = client.get("/fhir/Patient/$export?_type=Patient", headers={**ASYNC, **narrow})
    assert kick_off.status_code == 202, kick_off.text
    found = _manifest(client, kick_off.headers["content-location"], narrow)
    assert [o["type"] for o in found["output"]] == ["Patient"]


def test_a_filter_s_chains_need_the_types_they_search(
    secured: tuple[TestClient, Authority],
) -> None:
    """A chain or ``_has`` in a ``_typeFilter`` searches other types: a token that may not
    export them would learn of their records through which resources the filter keeps."""
    client, authority = secured
    chained = "_type=Organization&_typeFilter=Organization%3F_has%3APatient%3Aorganization%3Agender%3Dfemale"
    organizations = _bearer(authority, role="system", scope="system/Organization.rs")
    refused = client.get(f"/fhir/$export?{chained}", headers={**ASYNC, **organizations})
    assert refused.status_code == 403, refused.text
    assert "Patient" in refused.json()["issue"][0]["diagnostics"]
    plain = "_type=Organization&_typeFilter=Organization%3Fname%3DClinique"
    kicked = client.get(f"/fhir/$export?{plain}", headers={**ASYNC, **organizations})
    assert kicked.status_code == 202, kicked.text
    both = _bearer(authority, role="system", scope="system/Organization.rs system/Patient.rs")
    kicked = client.get(f"/fhir/$export?{chained}", headers={**ASYNC, **both})
    assert kicked.status_code == 202, kicked.text
    status_url = kicked.headers["content-location"]
    assert client.get(status_url, headers=organizations).status_code == 403
    assert _manifest(client, status_url, both)["output"] == []  # ana has no gender
