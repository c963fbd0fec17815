"""The Bulk Data kick-off's narrowing parameters over HTTP: ``_typeFilter`` (checked
against a plain search of the same vault), a POST kick-off's Parameters (the same export
as its GET), and ``patient`` (only those patients' compartments)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import put_resource
from starlette.testclient import TestClient
from test_api_export import ASYNC, LENIENT, download, kick_off, manifest

from coffre.fhir import json

LOINC = "http://loinc.org"
CODES = ("4548-4", "2339-0", "8302-2")
PATIENTS = (("ana", "female", "Dupont"), ("bob", "male", "Martin"), ("cyd", "female", "Dupuis"))
POST_HEADERS = {**ASYNC, "Content-Type": "application/fhir+json"}


def _lab(number: int) -> dict[str, Any]:
    """An Observation of one of three codes, patients, statuses and days; every fifth has
    no value (for ``:missing``)."""
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"lab-{number}",
        "status": ("final", "preliminary")[number % 2],
        "code": {"coding": [{"system": LOINC, "code": CODES[number % 3]}]},
        "subject": {"reference": f"Patient/{_subject(number)}"},
        "effectiveDateTime": f"2020-01-{number + 1:02d}",
    }
    if number % 5:
        observation["valueQuantity"] = {"value": number * 1.5, "unit": "mg/dL"}
    return observation


def _subject(number: int) -> str:
    return PATIENTS[(number // 2) % 3][0]


def _labs(client: TestClient) -> None:
    for pid, gender, family in PATIENTS:
        patient = {"resourceType": "Patient", "id": pid, "gender": gender}
        put_resource(client, {**patient, "name": [{"family": family}]})
    for number in range(14):
        put_resource(client, _lab(number))
    members = [{"entity": {"reference": f"Patient/{p}"}} for p in ("ana", "cyd")]
    group = {"resourceType": "Group", "id": "g", "type": "person", "actual": True}
    put_resource(client, {**group, "member": members})


def _searched(client: TestClient, resource_type: str, query: str) -> set[str]:
    """The ids a plain search of the vault finds: what a filter must export."""
    bundle = client.get(f"/fhir/{resource_type}?{query}&_count=1000").json()
    assert bundle["resourceType"] == "Bundle", bundle
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def _filtered(client: TestClient, query: str, headers: dict[str, str] = ASYNC) -> dict[str, Any]:
    return manifest(client, kick_off(client, f"/fhir/$export?{query}", headers))


def _ids(files: dict[str, list[dict[str, Any]]], resource_type: str) -> set[str]:
    return {resource["id"] for resource in files.get(resource_type, [])}


def _type_filter(*queries: str) -> str:
    """``_typeFilter`` as the IG writes it: each query URL-encoded, joined by commas."""
    return "_typeFilter=" + ",".join(quote(query, safe="") for query in queries)


OBSERVATION_FILTERS = (
    f"code={LOINC}|4548-4",
    "code=4548-4,2339-0",  # a comma of the query: an OR of values, not another query
    "date=ge2020-01-06&status=final",
    "value-quantity=gt6",
    "value-quantity:missing=true",
    "code:not=8302-2",
    "subject=Patient/ana",
    "subject:Patient.gender=female",  # a chain
    "subject:Patient.name:contains=upu",
)
PATIENT_FILTERS = ("name:contains=upo", "_has:Observation:subject:code=8302-2", "gender=male")


# -- _typeFilter ------------------------------------------------------------------------------


def test_a_type_filter_exports_what_the_same_search_finds(client: TestClient) -> None:
    """Each filter holds a file to what ``GET /fhir/Type?query`` finds on the same vault
    (the search is the independent check); a type without filter is whole; the manifest's
    counts are the files' lines (``download`` checks them)."""
    _labs(client)
    every_patient = _searched(client, "Patient", "_id=ana,bob,cyd")
    for query in OBSERVATION_FILTERS:
        found = _filtered(
            client, f"_type=Observation,Patient&{_type_filter('Observation?' + query)}"
        )
        files = download(client, found)
        expected = _searched(client, "Observation", query)
        assert 0 < len(expected) < 14, query  # the filter narrows, and finds some
        assert _ids(files, "Observation") == expected, query
        assert _ids(files, "Patient") == every_patient, query  # no filter: unaffected
    for query in PATIENT_FILTERS:
        files = download(client, _filtered(client, _type_filter("Patient?" + query)))
        assert _ids(files, "Patient") == _searched(client, "Patient", query), query
        assert len(files["Observation"]) == 14, query


def test_several_filters_of_a_type_are_or_ed_however_they_are_sent(client: TestClient) -> None:
    _labs(client)
    first, second = f"code={LOINC}|8302-2", "value-quantity=ge15"
    expected = _searched(client, "Observation", first) | _searched(client, "Observation", second)
    assert _searched(client, "Observation", first) - _searched(client, "Observation", second)
    comma = _type_filter(f"Observation?{first}", f"Observation?{second}")
    repeated = f"{_type_filter(f'Observation?{first}')}&{_type_filter(f'Observation?{second}')}"
    for query in (comma, repeated):
        found = _filtered(client, f"_type=Observation&{query}")
        assert [o["count"] for o in found["output"]] == [len(expected)]
        assert _ids(download(client, found), "Observation") == expected


def test_a_filter_goes_with_type_and_since(client: TestClient) -> None:
    """The three narrow together: the files hold the types of ``_type``, written at or
    after ``_since``, that meet their filters."""
    _labs(client)
    time.sleep(0.01)
    cut = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    for number in (0, 1, 3, 6):  # lab-0 and lab-3 are 4548-4, lab-1 2339-0, lab-6 4548-4
        put_resource(client, {**_lab(number), "status": "amended"})
    query = f"code={LOINC}|4548-4"
    found = _filtered(
        client, f"_type=Observation&_since={cut}&{_type_filter('Observation?' + query)}"
    )
    assert _ids(download(client, found), "Observation") == {"lab-0", "lab-3", "lab-6"}
    assert [o["type"] for o in found["output"]] == ["Observation"]


def test_a_filter_that_finds_nothing_leaves_its_type_out_of_the_manifest(
    client: TestClient,
) -> None:
    _labs(client)
    found = _filtered(client, f"_type=Observation,Patient&{_type_filter('Observation?code=none')}")
    assert [o["type"] for o in found["output"]] == ["Patient"]


def test_a_filter_is_read_as_of_the_kick_off(client: TestClient) -> None:
    """The snapshot holds for filters too: a resource changed after the kick-off is
    tested, and given, as it was then."""
    _labs(client)
    query = f"code={LOINC}|2339-0"
    response = client.get(
        f"/fhir/$export?_type=Observation&{_type_filter('Observation?' + query)}", headers=ASYNC
    )
    expected = _searched(client, "Observation", query)
    put_resource(client, {**_lab(1), "code": {"coding": [{"system": LOINC, "code": "0-0"}]}})
    files = download(client, manifest(client, response.headers["content-location"]))
    assert _ids(files, "Observation") == expected
    assert next(o for o in files["Observation"] if o["id"] == "lab-1")["code"]["coding"][0][
        "code"
    ] == ("2339-0")


def test_a_criterion_coffre_cannot_answer_is_refused_or_left_out_when_lenient(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Strict: a 400 that names the parameter. Lenient: the criterion is left out (the
    file holds what the others find), and the warnings file says so by the parameter's
    name; the filter's values are in no log line and no warning."""
    caplog.set_level(logging.DEBUG)
    _labs(client)
    secret = "zz-secret-value"
    query = f"Observation?_sort=date&code={LOINC}|4548-4&colour={secret}"
    refused = client.get(f"/fhir/$export?{_type_filter(query)}", headers=ASYNC)
    assert refused.status_code == 400
    assert "_sort" in refused.json()["issue"][0]["diagnostics"]
    alone = client.get(
        f"/fhir/$export?{_type_filter(query.replace('_sort=date&', ''))}", headers=ASYNC
    )
    assert alone.status_code == 400 and "colour" in alone.json()["issue"][0]["diagnostics"]
    found = _filtered(client, f"_type=Observation&{_type_filter(query)}", LENIENT)
    expected = _searched(client, "Observation", f"code={LOINC}|4548-4")
    assert _ids(download(client, found), "Observation") == expected
    warnings = client.get(found["error"][0]["url"])
    lines = [json.loads(line) for line in warnings.content.splitlines()]
    diagnostics = [line["issue"][0]["diagnostics"] for line in lines]
    assert len(diagnostics) == 2
    assert any("colour" in d for d in diagnostics) and any("_sort" in d for d in diagnostics)
    assert secret not in warnings.text and "4548" not in warnings.text
    assert secret not in _server_logs(caplog) and "4548" not in _server_logs(caplog)


def test_a_filter_s_values_stay_out_of_every_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _labs(client)
    secret = "Dupuis-secret"
    files = download(client, _filtered(client, _type_filter(f"Patient?name={secret}")))
    assert "Patient" not in files
    bad = client.get(f"/fhir/$export?{_type_filter(f'Patient?birthdate={secret}')}", headers=ASYNC)
    assert bad.status_code == 400
    assert secret not in _server_logs(caplog)


def _server_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged: the test's own HTTP client logs each URL it asks for."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))


# -- POST kick-off ---------------------------------------------------------------------------


def _parameters(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameters)}


def _post(client: TestClient, path: str, body: Any) -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers=POST_HEADERS)


def test_a_post_kick_off_exports_what_its_get_does(client: TestClient) -> None:
    _labs(client)
    time.sleep(0.01)
    cut = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    for number in (0, 1, 2, 4):
        put_resource(client, {**_lab(number), "status": "amended"})
    filter_query = f"Observation?code={LOINC}|4548-4,2339-0"
    get = f"_type=Observation,Patient&_since={cut}&{_type_filter(filter_query)}"
    body = _parameters(
        {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        {"name": "_type", "valueString": "Observation"},
        {"name": "_type", "valueString": "Patient"},
        {"name": "_since", "valueInstant": cut},
        {"name": "_typeFilter", "valueString": filter_query},
    )
    for path in ("/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/g/$export"):
        posted = _post(client, path, body)
        assert posted.status_code == 202, posted.text
        found = manifest(client, posted.headers["content-location"])
        assert found["request"] == f"http://testserver{path}"  # the IG: without parameters
        by_get = download(client, manifest(client, kick_off(client, f"{path}?{get}")))
        assert download(client, found) == by_get, path
        assert by_get, path
    assert download(client, found)["Observation"][0]["status"] == "amended"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": {"name": "_type"}},
        _parameters({"valueString": "Patient"}),  # no name
        _parameters({"name": "_type", "valueInteger": 1}),
        _parameters({"name": "_type", "valueString": "Patient", "valueCode": "Patient"}),
        _parameters({"name": "_type", "valueString": "Nonsense"}),
        _parameters({"name": "_since", "valueString": "yesterday"}),
        _parameters({"name": "_since", "valueInstant": "yesterday"}),
        _parameters({"name": "_typeFilter", "valueString": "Observation?foo=1"}),
        _parameters({"name": "patient", "valueString": "Patient/ana"}),
        _parameters({"name": "patient", "valueReference": {"reference": "Group/g"}}),
        _parameters({"name": "patient", "valueReference": {"display": "Ana"}}),
        _parameters({"name": "_elements", "valueString": "name.given"}),
        _parameters({"name": "includeAssociatedData", "valueString": "LatestProvenanceResources"}),
    ],
)
def test_malformed_parameters_are_a_400(client: TestClient, body: Any) -> None:
    _labs(client)
    response = _post(client, "/fhir/Patient/$export", body)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_post_kick_off_refuses_query_parameters_and_a_body_that_is_no_json(
    client: TestClient,
) -> None:
    body = json.dumps(_parameters())
    with_query = client.post("/fhir/$export?_type=Patient", content=body, headers=POST_HEADERS)
    assert with_query.status_code == 400, with_query.text
    not_json = client.post("/fhir/$export", content=b"{", headers=POST_HEADERS)
    assert not_json.status_code == 400, not_json.text
    assert _post(client, "/fhir/$export", _parameters()).status_code == 202


# -- patient ------------------------------------------------------------------------------------


def _patients(*ids: str) -> dict[str, Any]:
    return _parameters(
        *({"name": "patient", "valueReference": {"reference": f"Patient/{p}"}} for p in ids)
    )


def _exported(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, set[str]]:
    response = _post(client, path, body)
    assert response.status_code == 202, response.text
    files = download(client, manifest(client, response.headers["content-location"]))
    return {name: {r["id"] for r in resources} for name, resources in files.items()}


def _labs_of(*patients: str) -> set[str]:
    return {f"lab-{n}" for n in range(14) if _subject(n) in patients}


def test_patient_narrows_an_export_to_those_patients_compartments(client: TestClient) -> None:
    _labs(client)
    assert _exported(client, "/fhir/Patient/$export", _patients("ana", "bob")) == {
        "Group": {"g"},  # it names ana: in her compartment
        "Patient": {"ana", "bob"},
        "Observation": _labs_of("ana", "bob"),
    }
    assert _exported(client, "/fhir/Group/g/$export", _patients("cyd")) == {
        "Group": {"g"},
        "Patient": {"cyd"},
        "Observation": _labs_of("cyd"),
    }
    body = _patients("ana")
    body["parameter"] += [
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "_typeFilter", "valueString": "Observation?status=final"},
    ]
    assert _exported(client, "/fhir/Patient/$export", body) == {
        "Patient": {"ana"},
        "Observation": _labs_of("ana") & _searched(client, "Observation", "status=final"),
    }


@pytest.mark.parametrize(
    ("path", "patients", "status"),
    [
        ("/fhir/Group/g/$export", ("ana", "bob"), 422),  # bob is no member of g
        ("/fhir/Patient/$export", ("ana", "nobody"), 404),
        ("/fhir/Group/g/$export", ("nobody",), 404),
        ("/fhir/$export", ("ana",), 400),  # the IG: not for a system-level export
    ],
)
def test_a_patient_the_vault_or_the_group_does_not_hold_is_refused(
    client: TestClient, path: str, patients: tuple[str, ...], status: int
) -> None:
    _labs(client)
    response = _post(client, path, _patients(*patients))
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_deleted_patient_is_refused(client: TestClient) -> None:
    _labs(client)
    assert client.delete("/fhir/Patient/ana").status_code in (200, 204)
    response = _post(client, "/fhir/Patient/$export", _patients("ana"))
    assert response.status_code == 410, response.text


# -- _elements --------------------------------------------------------------------------------


def test_elements_keep_those_elements_of_the_types_they_name(client: TestClient) -> None:
    """``element`` applies to every type, ``Type.element`` to its type; mandatory elements
    stay, and each resource so cut is tagged SUBSETTED; a type named by none is whole."""
    _labs(client)
    query = "_type=Patient,Observation,Group&_elements=subject,Patient.gender"
    files = download(client, _filtered(client, query))
    for patient in files["Patient"]:
        assert set(patient) == {"resourceType", "id", "meta", "gender"}
        assert patient["meta"]["tag"][-1]["code"] == "SUBSETTED"
    for observation in files["Observation"]:  # status and code are mandatory
        assert set(observation) == {"resourceType", "id", "meta", "status", "code", "subject"}
    group = files["Group"][0]
    assert {"type", "actual"} <= set(group) and "member" not in group  # mandatory, or not named
    whole = download(client, _filtered(client, "_type=Patient,Group&_elements=Observation.status"))
    assert whole["Patient"][0]["name"] and "tag" not in whole["Patient"][0]["meta"]
    assert whole["Group"][0]["member"]
    posted = _post(
        client,
        "/fhir/$export",
        _parameters(
            {"name": "_type", "valueString": "Patient"},
            {"name": "_elements", "valueString": "Patient.gender"},
        ),
    )
    assert posted.status_code == 202, posted.text
    by_post = download(client, manifest(client, posted.headers["content-location"]))
    assert by_post == download(client, _filtered(client, "_type=Patient&_elements=Patient.gender"))
