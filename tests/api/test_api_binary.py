"""A Binary in its own content type (coffre/api/binary.py, R4 binary.html): sent as its
bytes, read back as them unless the request names FHIR JSON, and served so that a
browser runs nothing in them."""

from __future__ import annotations

import base64

import pytest
from conftest import FHIR_JSON
from starlette.testclient import TestClient

from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


def _send_pdf(client: TestClient) -> str:
    created = client.post("/fhir/Binary", content=PDF, headers={"Content-Type": "application/pdf"})
    assert created.status_code == 201, created.text
    assert created.json()["contentType"] == "application/pdf"
    resource_id: str = created.json()["id"]
    return resource_id


def test_a_pdf_sent_as_it_is_is_read_back_as_it_is(client: TestClient) -> None:
    resource_id = _send_pdf(client)

    read = client.get(f"/fhir/Binary/{resource_id}", headers={"Accept": "*/*"})

    assert read.status_code == 200
    assert read.content == PDF
    assert read.headers["content-type"] == "application/pdf"
    assert read.headers["etag"] == 'W/"1"' and "last-modified" in read.headers
    assert read.headers["content-security-policy"].startswith("sandbox")
    again = client.get(f"/fhir/Binary/{resource_id}", headers={"If-None-Match": 'W/"1"'})
    assert again.status_code == 304


def test_bytes_handed_out_are_logged_as_a_read_and_a_refusal_is_not(
    client: TestClient, records: RecordStore
) -> None:
    resource_id = _send_pdf(client)
    before = records.storage.leaf_count()
    assert (
        client.get(f"/fhir/Binary/{resource_id}", headers={"Accept": "image/png"}).status_code
        == 406
    )
    assert records.storage.leaf_count() == before

    assert client.get(f"/fhir/Binary/{resource_id}").content == PDF

    (leaf,) = (Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count()))
    assert leaf.kind == LeafKind.READ
    assert leaf.loc == records.keys.location("Binary", resource_id)


@pytest.mark.parametrize(
    ("query", "accept"),
    [
        ("", "application/fhir+json"),
        ("", "application/json"),
        ("", "application/pdf;q=0.5, application/fhir+json"),
        ("?_format=json", "*/*"),
        ("?_summary=false", "*/*"),
    ],
)
def test_a_read_that_names_fhir_json_gets_the_resource(
    client: TestClient, query: str, accept: str
) -> None:
    resource_id = _send_pdf(client)

    read = client.get(f"/fhir/Binary/{resource_id}{query}", headers={"Accept": accept})

    assert read.status_code == 200
    assert read.json()["resourceType"] == "Binary"
    assert base64.b64decode(read.json()["data"]) == PDF


@pytest.mark.parametrize("accept", ["", ",,", "text/*", "image/png, */*;q=0.1", "json"])
def test_an_accept_that_takes_the_content_type_or_names_nothing_gets_the_bytes(
    client: TestClient, accept: str
) -> None:
    """Elements that are no media range are left out, as if not sent (as for JSON)."""
    created = client.post("/fhir/Binary", content=b"note", headers={"Content-Type": "text/plain"})

    read = client.get(f"/fhir/Binary/{created.json()['id']}", headers={"Accept": accept})

    assert read.status_code == 200 and read.content == b"note"


def test_a_read_that_refuses_the_content_type_gets_a_406_that_names_it(
    client: TestClient,
) -> None:
    resource_id = _send_pdf(client)

    read = client.get(f"/fhir/Binary/{resource_id}", headers={"Accept": "image/png"})

    assert read.status_code == 406
    diagnostics = read.json()["issue"][0]["diagnostics"]
    assert f"Binary/{resource_id} is application/pdf" in diagnostics


def test_bytes_put_as_they_are_make_versions_read_back_by_vread(client: TestClient) -> None:
    text = {"Content-Type": "text/plain; charset=utf-8"}
    first = client.put("/fhir/Binary/note-1", content="Allergie à la pénicilline", headers=text)
    second = client.put("/fhir/Binary/note-1", content="Aucune allergie connue", headers=text)
    assert (first.status_code, second.status_code) == (201, 200)

    version_1 = client.get("/fhir/Binary/note-1/_history/1")

    assert version_1.text == "Allergie à la pénicilline"
    assert version_1.headers["content-type"] == "text/plain; charset=utf-8"
    assert client.get("/fhir/Binary/note-1").text == "Aucune allergie connue"


def test_a_binary_sent_as_fhir_json_is_read_back_as_its_bytes(client: TestClient) -> None:
    resource = {"resourceType": "Binary", "contentType": "image/png", "data": "iVBORw0KGgo="}
    created = client.post("/fhir/Binary", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201

    read = client.get(f"/fhir/Binary/{created.json()['id']}")

    assert read.content == base64.b64decode("iVBORw0KGgo=")
    assert read.headers["content-type"] == "image/png"


def test_an_html_document_is_served_where_it_cannot_run_script(client: TestClient) -> None:
    page = b"<html><body><script>alert(document.cookie)</script></body></html>"
    created = client.post("/fhir/Binary", content=page, headers={"Content-Type": "text/html"})

    read = client.get(f"/fhir/Binary/{created.json()['id']}", headers={"Accept": "text/html"})

    assert read.content == page
    policy = read.headers["content-security-policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("application/pdf; x", 415), ("not a type", 415)],
)
def test_a_malformed_content_type_is_refused(
    client: TestClient, content_type: str, status: int
) -> None:
    answer = client.post("/fhir/Binary", content=PDF, headers={"Content-Type": content_type})
    assert answer.status_code == status
    assert "Content-Type" in answer.json()["issue"][0]["diagnostics"]


def test_only_a_binary_is_taken_as_bytes(client: TestClient) -> None:
    answer = client.post("/fhir/Patient", content=PDF, headers={"Content-Type": "application/pdf"})
    assert answer.status_code == 415


def test_an_empty_upload_is_a_binary_without_data(client: TestClient) -> None:
    created = client.post("/fhir/Binary", content=b"", headers={"Content-Type": "text/plain"})
    assert created.status_code == 201 and "data" not in created.json()
    read = client.get(f"/fhir/Binary/{created.json()['id']}")
    assert read.status_code == 200 and read.content == b""


def test_the_security_context_travels_in_its_header_both_ways(
    client: TestClient, records: RecordStore
) -> None:
    """A scanned letter sent for a patient is that patient's record (sealed in their
    compartment), and says so when it is read back as its bytes."""
    headers = {"Content-Type": "application/pdf", "X-Security-Context": "Patient/ana"}
    created = client.put("/fhir/Binary/letter-ana", content=PDF, headers=headers)
    assert created.status_code == 201
    assert created.json()["securityContext"] == {"reference": "Patient/ana"}
    stored = records.storage.latest(records.keys.location("Binary", "letter-ana"))
    assert stored is not None and stored.comp == records.keys.patient_compartment("ana")

    read = client.get("/fhir/Binary/letter-ana")

    assert read.content == PDF and read.headers["x-security-context"] == "Patient/ana"


@pytest.mark.parametrize(
    ("content_type", "served"),
    [
        ("text/plain; charset=iso-8859-1", "text/plain; charset=iso-8859-1"),
        ("text/csv", "text/csv"),
        ("текст/простой", "application/octet-stream"),
        ('text/plain; name="ñ"', "application/octet-stream"),
        ('text/plain; name="\u2028"', "application/octet-stream"),
        ('text/plain; name="a\\"b"', 'text/plain; name="a\\"b"'),
    ],
)
def test_the_bytes_are_labelled_as_stored_or_as_bytes_when_no_header_can_carry_it(
    client: TestClient, content_type: str, served: str
) -> None:
    """A charset is not made up for text, and a contentType that is no media type (the
    schema takes any code) is no 500."""
    resource = {"resourceType": "Binary", "contentType": content_type, "data": "QUJD"}
    created = client.post("/fhir/Binary", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201

    read = client.get(f"/fhir/Binary/{created.json()['id']}")

    assert read.status_code == 200 and read.content == b"ABC"
    assert read.headers["content-type"] == served
