"""An answer is labelled with the JSON media type the client asked for."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient


@pytest.mark.parametrize(
    ("url", "accept", "label"),
    [
        ("/fhir/Patient/ana", None, "application/fhir+json"),
        ("/fhir/Patient/ana", "*/*", "application/fhir+json"),
        ("/fhir/Patient/ana", "application/json", "application/json"),
        ("/fhir/Patient/ana", "application/json, application/fhir+json", "application/fhir+json"),
        ("/fhir/Patient/ana", "application/fhir+json;q=0.5, application/json", "application/json"),
        ("/fhir/Patient/ana", "application/json, */*;q=0.8", "application/json"),
        ("/fhir/Patient/ana", "application/fhir+json;q=0, application/json", "application/json"),
        ("/fhir/Patient/ana", "application/fhir+json;q=0, */*", "application/json"),
        ("/fhir/Patient/ana?_format=application/json", "application/fhir+json", "application/json"),
        ("/fhir/Patient/ana?_format=json", "application/json", "application/fhir+json"),
        ("/fhir/Patient?_id=ana", "application/json", "application/json"),
        ("/fhir/Patient/ana/_history", "application/json", "application/json"),
        ("/fhir/metadata", "application/json", "application/json"),
        ("/fhir/Patient/nobody", "application/json", "application/json"),  # an OperationOutcome
    ],
)
def test_the_content_type_is_the_json_type_asked_for(
    client: TestClient, url: str, accept: str | None, label: str
) -> None:
    client.put("/fhir/Patient/ana", json={"resourceType": "Patient", "id": "ana"})
    response = client.get(url, headers={"Accept": accept} if accept else {})
    assert response.headers["content-type"] == f"{label}; charset=utf-8"
    assert response.json()["resourceType"]


def test_a_write_answers_in_the_type_asked_for_and_html_is_left_alone(client: TestClient) -> None:
    created = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={"Accept": "application/json", "Content-Type": "application/json"},
    )
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json; charset=utf-8"
    page = client.get("/portal/", headers={"Accept": "application/json"})
    assert page.headers["content-type"].startswith("text/html")


def test_the_capability_statement_lists_the_formats_answered(client: TestClient) -> None:
    """Every format the CapabilityStatement names is one a client gets by asking for it,
    and every label Coffre answers with is named there."""
    formats = client.get("/fhir/metadata").json()["format"]

    labels = {
        client.get("/fhir/metadata", params={"_format": name}).headers["content-type"]
        for name in formats
    }

    assert labels == {"application/fhir+json; charset=utf-8", "application/json; charset=utf-8"}
    assert {label.split(";")[0] for label in labels} <= set(formats)
