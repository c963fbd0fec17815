"""Every malformed request gets an OperationOutcome with the right status, never a 500,
and never leaves a partial write behind."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.service import RecordStore

SYSTEM = "urn:coffre:test:mrn"


def assert_outcome(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert isinstance(issue["diagnostics"], str) and issue["diagnostics"].strip()
    for fragment in fragments:
        assert fragment in issue["diagnostics"], issue["diagnostics"]
    return issue


def create_patient(client: TestClient, **fields: Any) -> str:
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", **fields}, headers=FHIR_JSON
    )
    assert response.status_code == 201, response.text
    resource_id: str = response.json()["id"]
    return resource_id


# -- bodies -------------------------------------------------------------------------------

BODY_CASES = [
    pytest.param(
        b'{"resourceType": "Patient",', FHIR_JSON, 400, "not valid JSON", id="malformed-json"
    ),
    pytest.param(b"\xff\xfe\x00", FHIR_JSON, 400, "not valid JSON", id="not-utf8"),
    pytest.param(b"", FHIR_JSON, 400, "no body", id="empty-body"),
    pytest.param(b'[{"resourceType": "Patient"}]', FHIR_JSON, 400, "JSON object", id="array"),
    pytest.param(b'"Patient"', FHIR_JSON, 400, "JSON object", id="string"),
    pytest.param(b"null", FHIR_JSON, 400, "JSON object", id="null"),
    pytest.param(b'{"gender": "male"}', FHIR_JSON, 400, "no resourceType", id="no-resource-type"),
    pytest.param(
        b'{"resourceType": 7}', FHIR_JSON, 400, "no resourceType", id="resource-type-not-string"
    ),
    pytest.param(
        b'{"resourceType": "Patientx"}',
        FHIR_JSON,
        400,
        "'Patientx' is not a FHIR R4 resource type",
        id="unknown-type-in-body",
    ),
    pytest.param(
        b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}',
        FHIR_JSON,
        400,
        "Observation",
        id="type-differs-from-url",
    ),
    pytest.param(
        b'{"resourceType": "Patient"}',
        {"Content-Type": "text/plain"},
        415,
        "text/plain",
        id="text-plain",
    ),
    pytest.param(
        b'{"resourceType": "Patient"}',
        {"Content-Type": "application/fhir+xml"},
        415,
        "application/fhir+xml",
        id="xml-body",
    ),
    pytest.param(b'{"resourceType": "Patient"}', {}, 415, "missing", id="no-content-type"),
]


@pytest.mark.parametrize(("body", "headers", "status", "fragment"), BODY_CASES)
def test_a_bad_body_on_create_gets_an_outcome(
    client: TestClient,
    records: RecordStore,
    body: bytes,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    response = client.post("/fhir/Patient", content=body, headers=headers)

    assert_outcome(response, status, fragment)
    assert records.storage.last_seq() == 0


@pytest.mark.parametrize(("body", "headers", "status", "fragment"), BODY_CASES)
def test_a_bad_body_on_update_gets_an_outcome(
    client: TestClient,
    records: RecordStore,
    body: bytes,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    pid = create_patient(client)

    response = client.put(f"/fhir/Patient/{pid}", content=body, headers=headers)

    assert_outcome(response, status, fragment)
    assert records.storage.last_seq() == 1


def test_a_body_over_the_limit_is_413(records: RecordStore) -> None:
    with TestClient(
        create_app(records, max_body_bytes=1000), raise_server_exceptions=False
    ) as small:
        big = {"resourceType": "Patient", "name": [{"text": "x" * 1200}]}
        declared = small.post("/fhir/Patient", json=big, headers=FHIR_JSON)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            body = json.dumps(big).encode()
            for start in range(0, len(body), 100):
                yield body[start : start + 100]

        streamed = small.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON)
        in_bundle = small.post(
            "/fhir",
            json={
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"resource": big, "request": {"method": "POST", "url": "Patient"}}],
            },
            headers=FHIR_JSON,
        )
        fits = small.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"text": "x" * 800}]},
            headers=FHIR_JSON,
        )

    assert_outcome(declared, 413, "1000 bytes")
    assert_outcome(streamed, 413, "1000 bytes")
    assert_outcome(in_bundle, 413, "1000 bytes")
    assert fits.status_code == 201
    assert records.storage.last_seq() == 1


@pytest.mark.parametrize("declared", ["9" * 5000, str(2**64)])
def test_a_content_length_larger_than_any_number_is_413(
    client: TestClient, records: RecordStore, declared: str
) -> None:
    response = client.post(
        "/fhir/Patient",
        content=b'{"resourceType": "Patient"}',
        headers={**FHIR_JSON, "Content-Length": declared},
    )
    assert_outcome(response, 413, "bytes accepted")
    assert records.storage.last_seq() == 0


def _nested_extensions(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "urn:coffre:test:x", "valueString": "x"}
    for _ in range(levels - 1):
        extension = {"url": "urn:coffre:test:x", "extension": [extension]}
    return {"resourceType": "Patient", "extension": [extension]}


def test_a_body_nested_too_deep_is_400_and_one_nested_less_is_served(
    client: TestClient, records: RecordStore
) -> None:
    too_deep = client.post("/fhir/Patient", json=_nested_extensions(150), headers=FHIR_JSON)
    assert_outcome(too_deep, 400, "more than 128 deep")
    assert records.storage.last_seq() == 0

    deep = client.post("/fhir/Patient", json=_nested_extensions(63), headers=FHIR_JSON)
    assert deep.status_code == 201, deep.text
    assert client.get("/fhir/_history").status_code == 200


def test_an_invalid_element_value_is_422_naming_it(
    client: TestClient, records: RecordStore
) -> None:
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "gender": "x"}, headers=FHIR_JSON
    )

    issue = assert_outcome(response, 422, "Patient.gender")
    assert issue["expression"] == ["Patient.gender"]
    assert records.storage.last_seq() == 0


def test_missing_required_elements_are_422_naming_them(
    client: TestClient, records: RecordStore
) -> None:
    response = client.post(
        "/fhir/Observation", json={"resourceType": "Observation"}, headers=FHIR_JSON
    )

    assert_outcome(response, 422, "Observation.code is missing: the element is mandatory")
    nested = {"resourceType": "Patient", "link": [{"type": "seealso"}]}
    response = client.post("/fhir/Patient", json=nested, headers=FHIR_JSON)
    assert_outcome(response, 422, "Patient.link[0].other is missing")
    assert records.storage.last_seq() == 0


@pytest.mark.parametrize(
    ("body", "element", "fault"),
    [
        ({"name": [{}]}, "Patient.name[0]", "is empty"),
        ({"name": [{"family": "Roy", "period": {}}]}, "Patient.name[0].period", "is empty"),
        ({"contained": [{"resourceType": "Organization", "type": [{}]}]}, "type[0]", "is empty"),
    ],
)
def test_an_empty_element_is_422_naming_it(
    client: TestClient, records: RecordStore, body: dict[str, Any], element: str, fault: str
) -> None:
    """ele-1: an element has a value or children."""
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", **body}, headers=FHIR_JSON
    )

    assert_outcome(response, 422, element, fault)
    assert records.storage.last_seq() == 0


def test_an_unknown_element_is_422(client: TestClient, records: RecordStore) -> None:
    response = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "favouriteColour": "blue"},
        headers=FHIR_JSON,
    )

    assert_outcome(response, 422, "favouriteColour")
    assert records.storage.last_seq() == 0


def test_a_nested_invalid_element_is_422_with_its_path(client: TestClient) -> None:
    body = {"resourceType": "Patient", "name": [{"family": "Tremblay"}, {"family": 42}]}

    issue = assert_outcome(client.post("/fhir/Patient", json=body, headers=FHIR_JSON), 422)

    assert issue["expression"] == ["Patient.name[1].family"]


def test_an_invalid_contained_resource_is_422(client: TestClient) -> None:
    body = {
        "resourceType": "Patient",
        "contained": [{"resourceType": "Organization", "id": "o", "active": "yes"}],
    }

    assert_outcome(client.post("/fhir/Patient", json=body, headers=FHIR_JSON), 422, "Organization")


XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


@pytest.mark.parametrize(
    ("div", "fault"),
    [
        ("not xml", "is not well-formed XML: syntax error, line 1, column 1"),
        ("<div>no ns</div>", "must be XHTML: a div element in the namespace"),
        (
            f"<div {XHTML}><script>alert(1)</script></div>",
            "may not contain a script element (txt-1",
        ),
        (
            f'<div {XHTML}><p onclick="x()">a</p></div>',
            "has a p element with an attribute onclick (event handlers are not allowed, txt-1)",
        ),
    ],
)
def test_a_narrative_that_is_not_safe_xhtml_is_422_naming_it(
    client: TestClient, records: RecordStore, div: str, fault: str
) -> None:
    """R4 txt-1: whoever renders a narrative gets no script, form or event handler."""
    patient = {"resourceType": "Patient", "text": {"status": "generated", "div": div}}
    contained = {"resourceType": "Patient", "id": "p", "contained": [{**patient, "id": "o"}]}
    contained["link"] = [{"other": {"reference": "#o"}, "type": "seealso"}]

    issue = assert_outcome(client.post("/fhir/Patient", json=patient, headers=FHIR_JSON), 422)
    assert issue["diagnostics"].startswith(
        f"the body is not a valid Patient: Patient.text.div {fault}"
    )
    assert issue["expression"] == ["Patient.text.div"]
    response = client.put("/fhir/Patient/p", json=contained, headers=FHIR_JSON)
    assert_outcome(response, 422, "contained[0] is not a valid Patient: Patient.text.div", fault)
    assert records.storage.last_seq() == 0


def test_a_contained_resource_holding_its_own_is_422_naming_the_invariant(
    client: TestClient, records: RecordStore
) -> None:
    organisation = {
        "resourceType": "Organization",
        "id": "o",
        "contained": [{"resourceType": "Organization", "id": "parent"}],
        "partOf": {"reference": "#parent"},
    }
    body = {
        "resourceType": "Patient",
        "contained": [organisation],
        "managingOrganization": {"reference": "#o"},
    }

    response = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)

    issue = assert_outcome(response, 422, "dom-2")
    assert issue["expression"] == ["Patient.contained[0]"]
    assert records.storage.last_seq() == 0


# -- URLs and headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "status", "fragment"),
    [
        pytest.param("POST", "/fhir/Patientx", 404, "Patientx", id="unknown-type-create"),
        pytest.param("GET", "/fhir/Patientx/1", 404, "Patientx", id="unknown-type-read"),
        pytest.param("GET", "/fhir/patient", 404, "patient", id="lower-case-type"),
        *(
            pytest.param(method, url, 404, "Parameters has no RESTful endpoint", id=name)
            for name, method, url in (
                ("parameters-create", "POST", "/fhir/Parameters"),
                ("parameters-read", "GET", "/fhir/Parameters/1"),
                ("parameters-search", "GET", "/fhir/Parameters?_id=1"),
                ("parameters-update", "PUT", "/fhir/Parameters/1"),
            )
        ),
        pytest.param("GET", "/fhir/Patientx?_id=1", 404, "Patientx", id="unknown-type-search"),
        pytest.param("GET", "/fhir/Patientx/_history", 404, "Patientx", id="unknown-type-history"),
        pytest.param(
            "GET", "/fhir/Patient/a$b", 400, "'a$b' is not a valid FHIR id", id="bad-id-read"
        ),
        pytest.param(
            "GET", "/fhir/Patient/" + "a" * 65, 400, "not a valid FHIR id", id="long-id-read"
        ),
        pytest.param("DELETE", "/fhir/Patient/a$b", 400, "not a valid FHIR id", id="bad-id-delete"),
        pytest.param(
            "GET", "/fhir/Patient/a$b/_history/1", 400, "not a valid FHIR id", id="bad-id-vread"
        ),
        pytest.param(
            "PATCH", "/fhir/Patient/1", 415, "application/json-patch+json", id="patch-as-fhir-json"
        ),
        pytest.param("POST", "/fhir/Patient/1", 405, "POST", id="post-to-instance"),
        pytest.param("PUT", "/fhir/Patient/1/_history", 405, "PUT", id="put-history"),
        pytest.param("POST", "/fhir/Patient/1/_history/1", 405, "POST", id="post-version"),
        pytest.param("GET", "/nothing", 404, "/nothing", id="outside-base"),
        pytest.param(
            "GET",
            "/fhir/Patient/1/_history/1/more",
            404,
            "/fhir/Patient/1/_history/1/more",
            id="too-deep",
        ),
        pytest.param(
            "GET", "/fhir/Patient?name:sounds=x", 400, ":sounds", id="unsupported-modifier"
        ),
        pytest.param(
            "GET",
            "/fhir/Patient?identifier=",
            400,
            "'identifier' has no value",
            id="empty-search-value",
        ),
        pytest.param("GET", "/fhir/Patient?_count=abc", 400, "_count=abc", id="count-abc"),
        pytest.param("GET", "/fhir/Patient?_count=-1", 400, "_count=-1", id="count-negative"),
        pytest.param("GET", "/fhir/Patient?_offset=x", 400, "_offset=x", id="offset-x"),
        pytest.param(
            "GET", "/fhir/Patient?_count=" + "9" * 5000, 400, "larger than", id="count-5000-digits"
        ),
        pytest.param(
            "GET", "/fhir/Patient?_offset=9223372036854775808", 400, "larger than", id="offset-2^63"
        ),
        pytest.param(
            "GET", "/fhir/_history?_snapshot=" + "1" * 5000, 400, "whole number", id="snapshot-5000"
        ),
        pytest.param(
            "GET",
            "/fhir/Patient/1/_history/" + "7" * 5000,
            404,
            "no version",
            id="version-5000-digits",
        ),
        pytest.param("GET", "/fhir/_history?_count=abc", 400, "_count=abc", id="history-count-abc"),
        pytest.param(
            "GET", "/fhir/_history?_since=yesterday", 400, "_since=yesterday", id="since-yesterday"
        ),
        pytest.param(
            "GET",
            "/fhir/Patient/_history?_since=2024-01-01T00:00:00",
            400,
            "time zone",
            id="since-no-zone",
        ),
        pytest.param(
            "GET",
            "/fhir/Patient/_history?_since=2024-01-01T00:00:00+01:00",
            400,
            "a + in a URL reads as a space, so send it as %2B",
            id="since-plus-unencoded",
        ),
        *(
            pytest.param("GET", f"/fhir/_history?_since={value}", 400, "FHIR instant", id=name)
            for name, value in (
                ("since-iso-week", "2020-W01-1T00:00:00Z"),
                ("since-basic-format", "20200101T000000Z"),
                ("since-no-seconds", "2020-01-01T00:00Z"),
                ("since-date-only", "2020-01-01"),
                ("since-zone-15h", "2020-01-01T00:00:00%2B15:00"),
            )
        ),
        *(
            pytest.param("GET", url, 400, "once", id=name)
            for name, url in (
                ("count-twice", "/fhir/Patient?gender=male&_count=1&_count=2"),
                (
                    "since-twice",
                    "/fhir/_history?_since=2020-01-01T00:00:00Z&_since=2021-01-01T00:00:00Z",
                ),
                ("summary-twice", "/fhir/Patient?gender=male&_summary=true&_summary=false"),
                ("total-twice", "/fhir/Patient?gender=male&_total=none&_total=accurate"),
                ("offset-twice", "/fhir/Patient/_history?_offset=1&_offset=2"),
            )
        ),
        pytest.param(
            "GET", "/fhir/_history?_snapshot=latest", 400, "_snapshot=latest", id="snapshot-word"
        ),
        pytest.param(
            "GET", "/fhir/Patient?_format=xml", 406, "_format=xml", id="format-xml-search"
        ),
        pytest.param(
            "GET",
            "/fhir/metadata?_format=application/fhir%2Bxml",
            406,
            "_format=application/fhir+xml",
            id="format-xml-metadata",
        ),
        pytest.param(
            "GET", "/fhir/_history?_format=ttl", 406, "_format=ttl", id="format-turtle-history"
        ),
    ],
)
def test_a_bad_request_gets_an_outcome(
    client: TestClient, method: str, url: str, status: int, fragment: str
) -> None:
    assert_outcome(client.request(method, url), status, fragment)


def test_a_parameters_resource_is_stored_nowhere(client: TestClient) -> None:
    """R4 gives Parameters no RESTful endpoint (an operation's input and output): neither
    a create nor a transaction's entry stores one, and the CapabilityStatement says so."""
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "a", "valueString": "b"}]}
    created = client.post("/fhir/Parameters", json=parameters, headers=FHIR_JSON)
    assert_outcome(created, 404, "Parameters has no RESTful endpoint")
    entry = {"resource": parameters, "request": {"method": "POST", "url": "Parameters"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert_outcome(client.post("/fhir", json=bundle, headers=FHIR_JSON), 404, "Parameters")
    assert client.get("/fhir/_history").json()["total"] == 0
    rest = client.get("/fhir/metadata").json()["rest"][0]
    listed = {resource["type"] for resource in rest["resource"]}
    assert "Parameters" not in listed and {"Patient", "OperationOutcome", "Bundle"} <= listed


def test_a_405_names_every_method_the_url_takes(client: TestClient) -> None:
    response = client.post("/fhir/Patient/1")

    assert_outcome(response, 405, "GET, HEAD, PUT, PATCH, DELETE")
    assert response.headers["allow"] == "GET, HEAD, PUT, PATCH, DELETE"
    assert client.post("/fhir/Patient/1/_history/1").headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("POST", "/fhir/metadata", "GET, HEAD"),
        ("DELETE", "/fhir/metadata", "GET, HEAD"),
        ("PATCH", "/fhir/metadata", "GET, HEAD"),
        ("PUT", "/fhir/_history", "GET, HEAD"),
        ("PUT", "/fhir/Patient/_history", "GET, HEAD"),
        ("DELETE", "/fhir/Patient/_history", "GET, HEAD"),
        ("GET", "/fhir/Patient/_search", "POST"),
        ("DELETE", "/fhir/Patient/_search", "POST"),
        ("PUT", "/fhir/_search", ""),
    ],
)
def test_a_method_a_fixed_url_does_not_take_is_405_naming_those_it_does(
    client: TestClient, method: str, url: str, allowed: str
) -> None:
    response = client.request(method, url, json={"resourceType": "Patient"}, headers=FHIR_JSON)

    assert_outcome(response, 405, allowed or "nor is any other")
    assert response.headers["allow"] == allowed


STRICT = {"Prefer": "handling=strict"}


def test_a_strict_search_names_the_unknown_parameter(client: TestClient) -> None:
    response = client.get("/fhir/Patient?_id=1&favourite=blue", headers=STRICT)

    issue = assert_outcome(response, 400, "'favourite'", "Patient")
    assert issue["code"] == "not-supported"


@pytest.mark.parametrize(
    "prefer", ["return=representation, handling=strict", "handling=strict; return=minimal"]
)
def test_a_strict_search_among_other_preferences_is_strict(client: TestClient, prefer: str) -> None:
    """RFC 7240 separates preferences with commas; Coffre also takes semicolons."""
    response = client.get("/fhir/Patient?favourite=blue", headers={"Prefer": prefer})

    assert_outcome(response, 400, "'favourite'")


def test_a_lenient_search_reports_the_unknown_parameter_in_the_bundle(client: TestClient) -> None:
    pid = create_patient(client)

    bundle = client.get(f"/fhir/Patient?_id={pid}&favourite=blue").json()

    assert [e["search"]["mode"] for e in bundle.get("entry", [])] == ["match", "outcome"]
    assert "'favourite'" in bundle["entry"][1]["resource"]["issue"][0]["diagnostics"]


def test_post_search_with_an_unknown_parameter_is_400_when_strict(client: TestClient) -> None:
    response = client.post("/fhir/Patient/_search", data={"favourite": "Roy"}, headers=STRICT)

    assert_outcome(response, 400, "'favourite'")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Accept": "application/fhir+xml"}, id="fhir-xml"),
        pytest.param({"Accept": "application/xml"}, id="xml"),
        pytest.param({"Accept": "text/turtle"}, id="turtle"),
    ],
)
def test_an_accept_coffre_cannot_meet_is_406(client: TestClient, headers: dict[str, str]) -> None:
    pid = create_patient(client)

    assert_outcome(client.get(f"/fhir/Patient/{pid}", headers=headers), 406, headers["Accept"])
    assert_outcome(client.get("/fhir/metadata", headers=headers), 406)
    assert_outcome(
        client.post(
            "/fhir/Patient", json={"resourceType": "Patient"}, headers={**FHIR_JSON, **headers}
        ),
        406,
    )


def test_json_formats_are_accepted(client: TestClient) -> None:
    pid = create_patient(client)

    for headers in (
        {"Accept": "application/json"},
        {"Accept": "*/*"},
        {"Accept": "application/fhir+json;q=1, application/fhir+xml;q=0.5"},
    ):
        assert client.get(f"/fhir/Patient/{pid}", headers=headers).status_code == 200
    for format_ in ("json", "application/fhir+json", "application/json"):
        assert client.get(f"/fhir/Patient/{pid}", params={"_format": format_}).status_code == 200
    as_json = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert as_json.status_code == 201


def test_json_formats_are_accepted_in_any_case_and_with_a_plus_left_unencoded(
    client: TestClient,
) -> None:
    pid = create_patient(client)

    for query in ("_format=application/fhir+json", "_format=JSON", "_format=application/json+fhir"):
        assert client.get(f"/fhir/Patient/{pid}?{query}").status_code == 200, query
    for accept in ("APPLICATION/FHIR+JSON", "Application/Json"):
        response = client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept})
        assert response.status_code == 200, accept


def test_put_with_a_body_id_other_than_the_url_is_400(
    client: TestClient, records: RecordStore
) -> None:
    pid = create_patient(client)

    response = client.put(
        f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": "another"}, headers=FHIR_JSON
    )

    issue = assert_outcome(response, 400, "'another'", repr(pid))
    assert issue["expression"] == ["Patient.id"]
    missing_id = client.put(
        f"/fhir/Patient/{pid}", json={"resourceType": "Patient"}, headers=FHIR_JSON
    )
    assert_outcome(missing_id, 400, "the body has no id", f'"id": "{pid}"')
    assert records.storage.last_seq() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Organization"},
        {"resourceType": "Observation"},  # an invalid one: the type is the fault to name
    ],
)
def test_put_with_a_body_of_another_type_is_400(
    client: TestClient, records: RecordStore, body: dict[str, Any]
) -> None:
    pid = create_patient(client)

    assert_outcome(
        client.put(f"/fhir/Patient/{pid}", json={**body, "id": pid}, headers=FHIR_JSON),
        400,
        f"resourceType is {body['resourceType']}",
        "the URL names Patient",
    )
    assert records.storage.last_seq() == 1


def test_put_at_a_bad_id_is_400(client: TestClient, records: RecordStore) -> None:
    long_id = "a" * 65

    response = client.put(
        f"/fhir/Patient/{long_id}",
        json={"resourceType": "Patient", "id": long_id},
        headers=FHIR_JSON,
    )

    assert response.status_code in (400, 422)
    assert_outcome(response, response.status_code, "id")
    assert records.storage.last_seq() == 0


@pytest.mark.parametrize(
    "value", ["abc", 'W/"x"', 'W/"1.0"', "W/", "", 'W/"1', '1"', '""1""', "W/1"]
)
def test_a_bad_if_match_is_400(client: TestClient, records: RecordStore, value: str) -> None:
    pid = create_patient(client)
    body = {"resourceType": "Patient", "id": pid, "gender": "male"}

    put = client.put(f"/fhir/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": value})
    delete = client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": value})

    assert_outcome(put, 400, "If-Match")
    assert_outcome(delete, 400, "If-Match")
    assert records.storage.last_seq() == 1


def test_a_conditional_create_with_an_unknown_parameter_is_400(
    client: TestClient, records: RecordStore
) -> None:
    response = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={**FHIR_JSON, "If-None-Exist": "favourite=Roy"},
    )

    assert_outcome(response, 400, "'favourite'", "If-None-Exist")
    assert records.storage.last_seq() == 0


# -- the last resort ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "media"),
    [("/fhir/Patient/boom", "application/fhir+json"), ("/portal/boom", "text/html")],
)
def test_an_unexpected_error_is_a_500_whose_message_reaches_no_log(
    records: RecordStore, caplog: pytest.LogCaptureFixture, path: str, media: str
) -> None:
    """The error is answered and logged by its type, and not raised on to the server (which
    would log its message and traceback, where a record's content may be quoted)."""
    app = create_app(records)

    async def failing(request: Request) -> Response:
        raise ValueError("Marie Tremblay, née le 1957-03-02")

    app.router.routes.insert(0, Route(path, failing))
    with TestClient(app, raise_server_exceptions=True) as client:  # a re-raised error fails
        response = client.get(path)

    assert response.status_code == 500 and response.headers["content-type"].startswith(media)
    if media != "text/html":
        assert_outcome(response, 500, "changed nothing")
    assert "unexpected ValueError: GET" in caplog.text
    assert "Tremblay" not in caplog.text and "Tremblay" not in response.text


@pytest.mark.parametrize(
    ("error", "status", "said"),
    [
        (ValueError("Marie Tremblay"), 500, "it may have been saved: read before repeating it"),
        (OSError(errno.EMFILE, "Too many open files"), 503, "short of a resource (Too many"),
    ],
)
def test_an_unexpected_error_of_a_write_never_says_it_changed_nothing(
    records: RecordStore,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
    said: str,
) -> None:
    """A write may have committed before the error: telling the client it changed nothing
    would have it repeat a saved create. Running out of file descriptors is a shortage to
    wait out (503), not a fault."""
    app = create_app(records)

    async def failing(request: Request) -> Response:
        raise error

    app.router.routes.insert(0, Route("/fhir/Patient/$everything", failing, methods=["POST"]))
    with TestClient(app, raise_server_exceptions=True) as client:
        response = client.post("/fhir/Patient/$everything", json={})

    assert_outcome(response, status, said)
    assert "changed nothing" not in response.text
    assert "POST (base) $everything" in caplog.text and "Tremblay" not in caplog.text


# -- bugs: 500s for input that is merely unusual ------------------------------------------


def test_vread_of_a_huge_version_is_404(client: TestClient) -> None:
    pid = create_patient(client)

    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/99999999999999999999"), 404)


def test_vread_of_version_0_is_404_and_logs_no_integrity_failure(
    client: TestClient, records: RecordStore
) -> None:
    pid = create_patient(client)
    leaves = records.storage.leaf_count()

    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/0"), 404, "no version 0")
    in_bundle = client.post(
        "/fhir",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "GET", "url": f"Patient/{pid}/_history/0"}}],
        },
        headers=FHIR_JSON,
    )
    assert_outcome(in_bundle, 404, "no version 0")
    assert records.storage.leaf_count() == leaves


def test_everything_with_a_huge_offset_is_not_a_500(client: TestClient) -> None:
    pid = create_patient(client)

    response = client.get(f"/fhir/Patient/{pid}/$everything?_offset=9223372036854775807")

    assert response.status_code == 200, response.text
    assert "entry" not in response.json()


@pytest.mark.parametrize("query", ["start=2020-01-01", "end=2020-12-31", "start=abc"])
def test_everything_refuses_the_date_range_it_cannot_apply(client: TestClient, query: str) -> None:
    """start and end narrow $everything to care dates; ignored, they answered every record
    of the patient, as if within the range asked for."""
    pid = create_patient(client)

    response = client.get(f"/fhir/Patient/{pid}/$everything?{query}")

    assert_outcome(response, 400, query.partition("=")[0], "_type, _since and _count")


def test_history_with_a_huge_offset_is_not_a_500(client: TestClient) -> None:
    create_patient(client)

    response = client.get("/fhir/_history?_offset=99999999999999999999")

    assert response.status_code in (200, 400), response.text


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Patient?_count=%C2%B2",
        "/fhir/_history?_offset=%C2%B2",
        "/fhir/Patient/{pid}/_history/%C2%B2",
    ],
)
def test_a_non_ascii_digit_is_not_a_500(client: TestClient, url: str) -> None:
    pid = create_patient(client)

    response = client.get(url.format(pid=pid))

    assert response.status_code in (400, 404), response.text


@pytest.mark.parametrize("form", [b"identifier=\xff\xfe", b"name=L%E9v"])
def test_post_search_with_a_body_that_is_not_utf8_is_400(client: TestClient, form: bytes) -> None:
    response = client.post(
        "/fhir/Patient/_search",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert_outcome(response, 400, "UTF-8")


def test_post_search_with_a_form_in_another_charset_is_415(client: TestClient) -> None:
    """Read as UTF-8, ``L%E9v`` would search for a replacement character and find none."""
    response = client.post(
        "/fhir/Patient/_search",
        content=b"name=L%E9v",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=ISO-8859-1"},
    )

    assert_outcome(response, 415, "ISO-8859-1", "UTF-8")


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Patient?name=%ff%fe",
        "/fhir/Patient?name=L%E9v",
        "/fhir/Patient/x/_history?_since=%C3",
    ],
)
def test_a_query_whose_escapes_are_not_utf8_is_400(client: TestClient, url: str) -> None:
    """Decoded leniently, it would search for replacement characters: nothing, no error."""
    assert_outcome(client.get(url), 400, "not UTF-8", "%C3%A9")


def test_a_query_of_escaped_utf8_is_taken(client: TestClient) -> None:
    response = client.get("/fhir/Patient?name=L%C3%A9v%C3%AAque")

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate"])
def test_a_body_with_a_content_encoding_is_415(
    client: TestClient, records: RecordStore, coding: str
) -> None:
    """Coffre decodes no content coding: read as it is, a compressed body is nonsense, and
    a body labelled compressed that is not would be taken for what it is not."""
    response = client.post(
        "/fhir/Patient",
        content=b'{"resourceType": "Patient"}',
        headers={**FHIR_JSON, "Content-Encoding": coding},
    )

    assert_outcome(response, 415, f"Content-Encoding is {coding}", "without Content-Encoding")
    assert records.storage.last_seq() == 0


def test_post_search_with_a_body_over_the_limit_is_413(records: RecordStore) -> None:
    with TestClient(
        create_app(records, max_body_bytes=1000), raise_server_exceptions=False
    ) as small:
        response = small.post("/fhir/Patient/_search", data={"name": "x" * 1200})

    assert_outcome(response, 413, "1000 bytes")


def test_post_search_with_a_body_that_is_no_form_is_415(client: TestClient) -> None:
    """Its parameters would be read as nonsense, and a lenient search would ignore them."""
    response = client.post(
        "/fhir/Patient/_search", json={"identifier": f"{SYSTEM}|1"}, headers=FHIR_JSON
    )

    assert_outcome(response, 415, "application/fhir+json", "application/x-www-form-urlencoded")


@pytest.mark.parametrize("meta", [None, "x", [], 3], ids=["null", "string", "array", "number"])
def test_a_meta_that_is_not_an_object_is_422(
    client: TestClient, records: RecordStore, meta: Any
) -> None:
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "meta": meta}, headers=FHIR_JSON
    )

    assert_outcome(response, 422, "meta")
    assert records.storage.last_seq() == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"maritalStatus": "x"},
        {"name": [5]},
        {"managingOrganization": 3},
        {"text": True},
        {"identifier": [None]},
    ],
    ids=["codeable-concept", "human-name", "reference", "narrative", "identifier-null"],
)
def test_a_complex_element_that_is_not_an_object_is_422(
    client: TestClient, records: RecordStore, fields: dict[str, Any]
) -> None:
    response = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", **fields}, headers=FHIR_JSON
    )

    assert_outcome(response, 422, next(iter(fields)))
    assert records.storage.last_seq() == 0


# -- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
patient_like = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "gender",
            "birthDate",
            "active",
            "name",
            "identifier",
            "meta",
            "contained",
            "text",
            "extension",
            "telecom",
            "x",
        ]
    ),
    json_values,
    max_size=4,
).map(lambda fields: {"resourceType": "Patient", **fields})
resource_types = st.sampled_from(
    ["Patient", "Observation", "Bundle", "Patientx", "", "OperationOutcome"]
)
HYPOTHESIS = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _post_checked(client: TestClient, records: RecordStore, body: bytes) -> None:
    before = records.storage.last_seq()
    response = client.post("/fhir/Patient", content=body, headers=FHIR_JSON)
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        assert_outcome(response, response.status_code)
        assert records.storage.last_seq() == before
    else:
        assert response.status_code == 201, response.text
        assert records.storage.last_seq() == before + 1
        assert response.json()["resourceType"] == "Patient"


@HYPOTHESIS
@given(value=json_values | patient_like)
def test_any_json_value_is_refused_cleanly_or_created(
    client: TestClient, records: RecordStore, value: Any
) -> None:
    _post_checked(client, records, json.dumps(value).encode())


@HYPOTHESIS
@given(
    resource_type=resource_types,
    fields=st.dictionaries(st.text(max_size=12), json_values, max_size=5),
)
def test_any_object_with_a_resource_type_is_refused_cleanly_or_created(
    client: TestClient, records: RecordStore, resource_type: str, fields: dict[str, Any]
) -> None:
    _post_checked(client, records, json.dumps({**fields, "resourceType": resource_type}).encode())


@HYPOTHESIS
@given(body=st.binary(max_size=200))
def test_any_bytes_are_refused_cleanly(
    client: TestClient, records: RecordStore, body: bytes
) -> None:
    _post_checked(client, records, body)


LONG = 20_000


@pytest.mark.parametrize(
    ("method", "url", "form", "status"),
    [
        pytest.param("GET", "/fhir/Patient?_sort=" + "x" * LONG, None, 400, id="sort-quoted"),
        pytest.param("POST", "/fhir/Patient/_search", {"_sort": "x" * LONG}, 400, id="sort-form"),
        pytest.param("GET", "/fhir/Patient?_count=" + "9" * LONG, None, 400, id="count-bare"),
        pytest.param("GET", "/fhir/Patient?_summary=" + "a b" * 5000, None, 400, id="spaced"),
        pytest.param("GET", "/fhir/Patient/" + "a" * LONG, None, 400, id="id"),
        pytest.param("GET", "/fhir/Patient?" + "y" * LONG + "=1", None, 200, id="ignored"),
        pytest.param("GET", "/fhir/Patient?_include=Patient:" + "z" * LONG, None, 200, id="inc"),
    ],
)
def test_a_message_quotes_a_long_client_value_only_in_part(
    client: TestClient, method: str, url: str, form: dict[str, str] | None, status: int
) -> None:
    """A value a client sent comes back as its beginning and its length, never whole."""
    response = client.request(method, url, data=form)
    assert response.status_code == status, response.text[:500]
    body = response.json()
    outcome = body if status != 200 else body["entry"][-1]["resource"]
    (message,) = [issue["diagnostics"] for issue in outcome["issue"]]
    assert len(message) < 1100 and "…" in message, message
    assert "x" * 99 in message or "characters" in message
