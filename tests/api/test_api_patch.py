"""The patch interaction (R4 http.html#patch) through the in-process app: a JSON Patch
(RFC 6902) written as an update, its conditions, its conditional form, its refusals, and
the log after it."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import jsonpatch
import jsonpointer
import orjson
import pytest
from api.test_api_crud import assert_outcome, created_id, patient
from conftest import FHIR_JSON
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from coffre.cli.audit import audit_log
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore

JSON_PATCH = "application/json-patch+json"
SECRET = "Zéphyrine-Quatrefages"  # a value of the record that no refusal may repeat


def send_patch(client: TestClient, url: str, operations: Any, **headers: str) -> httpx.Response:
    return client.patch(
        url, content=orjson.dumps(operations), headers={"Content-Type": JSON_PATCH, **headers}
    )


def stored_patient(client: TestClient, value: str = "p-1", **fields: Any) -> str:
    return created_id(client, patient(value, name=[{"family": SECRET, "given": ["Ana"]}], **fields))


def leaf_kinds(records: RecordStore) -> list[LeafKind]:
    data = records.storage.leaves(0, records.storage.leaf_count())
    return [Leaf.decode(leaf).kind for leaf in data]


def test_a_patch_writes_the_next_version_as_an_update_would(
    client: TestClient, records: RecordStore
) -> None:
    pid = stored_patient(client, gender="female")
    before = client.get(f"/fhir/Patient/{pid}").json()
    operations = [
        {"op": "replace", "path": "/gender", "value": "other"},
        {"op": "add", "path": "/name/0/given/-", "value": "Maria"},
        {"op": "add", "path": "/birthDate", "value": "1980-02-29"},
        {"op": "test", "path": "/name/0/family", "value": SECRET},
    ]

    response = send_patch(client, f"/fhir/Patient/{pid}", operations)

    assert response.status_code == 200, response.text
    assert leaf_kinds(records)[-1] is LeafKind.UPDATE
    assert records.access_history(pid)[0]["action"] == "U"
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["last-modified"]
    assert response.headers["location"].endswith(f"/Patient/{pid}/_history/2")
    expected = {
        **before,
        "gender": "other",
        "birthDate": "1980-02-29",
        "name": [{"family": SECRET, "given": ["Ana", "Maria"]}],
    }
    read = client.get(f"/fhir/Patient/{pid}").json()
    assert {k: v for k, v in read.items() if k != "meta"} == {
        k: v for k, v in expected.items() if k != "meta"
    }
    assert read["meta"]["versionId"] == "2"
    assert response.json() == read
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert [entry["resource"]["meta"]["versionId"] for entry in history["entry"]] == ["2", "1"]
    assert [entry["request"]["method"] for entry in history["entry"]] == ["PUT", "POST"]
    report = audit_log(client, records.ledger.verifier_key, None, full=True)
    assert report.consistent and not report.violations


@pytest.mark.parametrize(
    ("prefer", "body_type"),
    [("return=minimal", None), ("return=OperationOutcome", "OperationOutcome")],
)
def test_a_patch_answers_as_prefer_asks(
    client: TestClient, prefer: str, body_type: str | None
) -> None:
    pid = stored_patient(client)
    operations = [{"op": "add", "path": "/active", "value": True}]

    response = send_patch(client, f"/fhir/Patient/{pid}", operations, Prefer=prefer)

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    body = response.json() if response.content else None
    assert (body or {}).get("resourceType") == body_type


def test_a_patch_that_changes_nothing_writes_no_version(
    client: TestClient, records: RecordStore
) -> None:
    pid = stored_patient(client)
    before = records.storage.last_seq()

    response = send_patch(
        client, f"/fhir/Patient/{pid}", [{"op": "test", "path": "/id", "value": pid}]
    )

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"1"'
    assert records.storage.last_seq() == before


def test_if_match_on_a_patch_is_412_when_the_record_moved_on(
    client: TestClient, records: RecordStore
) -> None:
    pid = stored_patient(client)
    url = f"/fhir/Patient/{pid}"
    assert (
        send_patch(client, url, [{"op": "add", "path": "/gender", "value": "male"}]).status_code
        == 200
    )
    before = records.storage.last_seq()

    stale = send_patch(
        client,
        url,
        [{"op": "replace", "path": "/gender", "value": "female"}],
        **{"If-Match": 'W/"1"'},
    )
    current = send_patch(
        client,
        url,
        [{"op": "replace", "path": "/gender", "value": "other"}],
        **{"If-Match": 'W/"2"'},
    )

    assert_outcome(stale, 412, "version 2", "not 1")
    assert current.status_code == 200 and current.headers["etag"] == 'W/"3"'
    assert client.get(url).json()["gender"] == "other"
    assert records.storage.last_seq() > before


def test_a_conditional_patch_patches_its_one_match(client: TestClient) -> None:
    pid = stored_patient(client, "cp-1")
    stored_patient(client, "cp-2")
    operations = [{"op": "add", "path": "/gender", "value": "unknown"}]

    response = send_patch(client, "/fhir/Patient?identifier=cp-1", operations)

    assert response.status_code == 200, response.text
    assert response.json()["id"] == pid
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "unknown"


def test_a_conditional_patch_matching_nothing_is_404_and_several_412(
    client: TestClient, records: RecordStore
) -> None:
    stored_patient(client, "twin")
    stored_patient(client, "twin")
    before = records.storage.last_seq()
    operations = [{"op": "add", "path": "/gender", "value": "unknown"}]

    assert_outcome(send_patch(client, "/fhir/Patient?identifier=nobody", operations), 404)
    assert_outcome(
        send_patch(client, "/fhir/Patient?identifier=twin", operations), 412, "matches 2"
    )
    assert_outcome(send_patch(client, "/fhir/Patient", operations), 400, "search criteria")
    assert records.storage.last_seq() == before


def _deepening() -> list[dict[str, Any]]:
    """Extensions nested as deep as a patch may carry them (124 levels), then copied into
    themselves: each copy nests the record two levels deeper, past the 128 of any body."""
    extension: dict[str, Any] = {"url": "http://example.org/n", "valueString": "feuille"}
    for _ in range(61):
        extension = {"url": "http://example.org/n", "extension": [extension]}
    copy = {"op": "copy", "from": "/extension", "path": "/extension/0/extension"}
    return [{"op": "add", "path": "/extension", "value": [extension]}, *[copy] * 4]


@pytest.mark.parametrize(
    ("operations", "status", "fragment"),
    [
        ({"op": "add"}, 400, "array of operations"),
        ([{"op": "frobnicate", "path": "/gender"}], 400, "operation 0 has no op"),
        ([{"op": "add", "path": "/gender"}], 400, "no 'value' member"),
        ([{"op": "move", "path": "/gender"}], 400, "no 'from' member"),
        ([{"op": "add", "path": "gender", "value": "male"}], 400, "no JSON Pointer"),
        ([{"op": "remove", "path": "/birthDate"}], 409, "operation 0 (remove '/birthDate')"),
        ([{"op": "replace", "path": "/name/3/family", "value": "X"}], 409, "not there"),
        (
            [{"op": "test", "path": "/name/0/family", "value": "Other"}],
            409,
            "test '/name/0/family'",
        ),
        ([{"op": "add", "path": "/gender", "value": "sometimes"}], 422, "gender"),
        ([{"op": "add", "path": "/colour", "value": "blue"}], 422, "colour"),
        ([{"op": "replace", "path": "/id", "value": "other"}], 422, "resourceType or id"),
        ([{"op": "replace", "path": "/resourceType", "value": "Group"}], 422, "resourceType or id"),
        ([{"op": "remove", "path": "/id"}], 422, "resourceType or id"),
        ([{"op": "add", "path": "", "value": {"resourceType": "Patient"}}], 422, "id"),
        ([{"op": "remove", "path": "/gender"}] * 1001, 400, "more than the 1,000"),
        ([{"op": "copy", "from": "/name", "path": "/name/0/given/-"}] * 40, 422, "100,000"),
        (_deepening(), 422, "more than 128 deep"),
    ],
)
def test_a_patch_that_cannot_be_written_is_refused_saying_why_and_nothing_is_written(
    client: TestClient, records: RecordStore, operations: Any, status: int, fragment: str
) -> None:
    pid = stored_patient(client)
    before = records.storage.last_seq()

    response = send_patch(client, f"/fhir/Patient/{pid}", operations)

    issue = assert_outcome(response, status, fragment)
    assert SECRET not in response.text and "Quatrefages" not in issue["diagnostics"]
    assert records.storage.last_seq() == before
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_a_patch_of_a_missing_or_deleted_record_is_404_or_410(client: TestClient) -> None:
    pid = stored_patient(client)
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    operations = [{"op": "add", "path": "/gender", "value": "male"}]

    assert_outcome(send_patch(client, "/fhir/Patient/nobody", operations), 404, "does not exist")
    assert_outcome(send_patch(client, f"/fhir/Patient/{pid}", operations), 410, "deleted")


@pytest.mark.parametrize(
    "content_type", ["application/fhir+json", "application/json", "text/plain", None]
)
def test_a_patch_in_another_format_is_415(client: TestClient, content_type: str | None) -> None:
    pid = stored_patient(client)
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = orjson.dumps([{"op": "add", "path": "/gender", "value": "male"}])

    response = client.patch(f"/fhir/Patient/{pid}", content=body, headers=headers)

    assert_outcome(response, 415, JSON_PATCH)


def test_a_patch_that_is_not_json_or_empty_is_400(client: TestClient) -> None:
    pid = stored_patient(client)
    headers = {"Content-Type": JSON_PATCH}

    assert_outcome(client.patch(f"/fhir/Patient/{pid}", content=b"[{", headers=headers), 400)
    assert_outcome(client.patch(f"/fhir/Patient/{pid}", content=b"", headers=headers), 400)


def test_patch_is_taken_by_a_record_and_a_type_and_refused_by_a_version(
    client: TestClient,
) -> None:
    pid = stored_patient(client, "routes")
    operations = [{"op": "add", "path": "/gender", "value": "male"}]

    refused = send_patch(client, f"/fhir/Patient/{pid}/_history/1", operations)

    assert_outcome(refused, 405)
    assert "PATCH" not in refused.headers["allow"]
    assert send_patch(client, f"/fhir/Patient/{pid}", operations).status_code == 200
    assert send_patch(client, "/fhir/Patient?identifier=routes", operations).status_code == 200


def test_the_capability_statement_lists_patch_and_json_patch(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()

    assert statement["patchFormat"] == [JSON_PATCH]
    for resource in statement["rest"][0]["resource"]:
        assert {"code": "patch"} in resource["interaction"]


# -- in Bundles ---------------------------------------------------------------------------


def binary_patch(operations: Any, content_type: str = JSON_PATCH) -> dict[str, Any]:
    """A JSON Patch as a Bundle entry carries it (http.html#patch)."""
    data = base64.b64encode(orjson.dumps(operations)).decode()
    return {"resourceType": "Binary", "contentType": content_type, "data": data}


def patch_entry(url: str, operations: Any, **request: str) -> dict[str, Any]:
    return {
        "resource": binary_patch(operations),
        "request": {"method": "PATCH", "url": url, **request},
    }


def send_bundle(client: TestClient, kind: str, *entries: dict[str, Any]) -> httpx.Response:
    body = {"resourceType": "Bundle", "type": kind, "entry": list(entries)}
    return client.post("/fhir", json=body, headers=FHIR_JSON)


def test_a_transaction_patches_by_id_and_by_criteria(client: TestClient) -> None:
    first, second = stored_patient(client, "tp-1"), stored_patient(client, "tp-2")
    create = {"resource": patient("tp-3"), "request": {"method": "POST", "url": "Patient"}}

    response = send_bundle(
        client,
        "transaction",
        patch_entry(f"Patient/{first}", [{"op": "add", "path": "/gender", "value": "male"}]),
        create,
        patch_entry(
            "Patient?identifier=tp-2",
            [{"op": "add", "path": "/active", "value": False}],
            ifMatch='W/"1"',
        ),
    )

    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["200 OK", "201 Created", "200 OK"]
    assert client.get(f"/fhir/Patient/{first}").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{second}").json()["active"] is False
    assert client.get(f"/fhir/Patient/{second}").json()["meta"]["versionId"] == "2"


@pytest.mark.parametrize(
    ("failing", "status", "fragment"),
    [
        ([{"op": "test", "path": "/gender", "value": "male"}], 409, "test '/gender'"),
        ([{"op": "add", "path": "/gender", "value": "sometimes"}], 422, "gender"),
        ({"op": "add"}, 400, "array of operations"),
    ],
)
def test_a_failed_patch_fails_its_whole_transaction(
    client: TestClient, records: RecordStore, failing: Any, status: int, fragment: str
) -> None:
    first, second = stored_patient(client, "tf-1"), stored_patient(client, "tf-2")
    before = records.storage.last_seq()

    response = send_bundle(
        client,
        "transaction",
        patch_entry(f"Patient/{first}", [{"op": "add", "path": "/gender", "value": "male"}]),
        {"resource": patient("tf-3"), "request": {"method": "POST", "url": "Patient"}},
        patch_entry(f"Patient/{second}", failing),
    )

    issue = assert_outcome(response, status, "entry[2] (PATCH Patient)", fragment)
    assert SECRET not in issue["diagnostics"]
    assert records.storage.last_seq() == before
    assert "gender" not in client.get(f"/fhir/Patient/{first}").json()
    report = audit_log(client, records.ledger.verifier_key, None, full=True)
    assert report.consistent and not report.violations


def test_a_failed_patch_fails_alone_in_a_batch(client: TestClient) -> None:
    pid = stored_patient(client, "bp-1")

    response = send_bundle(
        client,
        "batch",
        patch_entry("Patient/nobody", [{"op": "add", "path": "/gender", "value": "male"}]),
        patch_entry(f"Patient/{pid}", [{"op": "add", "path": "/gender", "value": "male"}]),
        patch_entry(
            "Patient?identifier=bp-none", [{"op": "add", "path": "/active", "value": True}]
        ),
    )

    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["404 Not Found", "200 OK", "404 Not Found"]
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


@pytest.mark.parametrize(
    ("resource", "fragment"),
    [
        (binary_patch([], content_type="application/json"), "contentType"),
        ({"resourceType": "Binary", "contentType": JSON_PATCH}, "holds no data"),
        (patient("not-a-patch"), "Binary"),
    ],
)
def test_a_patch_entry_that_carries_no_json_patch_is_400(
    client: TestClient, resource: dict[str, Any], fragment: str
) -> None:
    pid = stored_patient(client, "bb-1")
    entry = {"resource": resource, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}

    assert_outcome(send_bundle(client, "transaction", entry), 400, fragment)


def test_a_transaction_that_patches_and_updates_one_resource_is_refused(
    client: TestClient,
) -> None:
    pid = stored_patient(client, "tw-1")
    update = {
        "resource": patient("tw-1", id=pid),
        "request": {"method": "PUT", "url": f"Patient/{pid}"},
    }

    response = send_bundle(
        client,
        "transaction",
        update,
        patch_entry(f"Patient/{pid}", [{"op": "add", "path": "/gender", "value": "male"}]),
    )

    assert_outcome(response, 400, "written twice")


# -- what a patch writes, generated ---------------------------------------------------------

GIVEN_NAMES = st.sampled_from(["Ana", "Maria", "Jean", "Léa"])
PATIENT_OPERATIONS = st.sampled_from(
    [
        {"op": "add", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "remove", "path": "/gender"},
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/active", "value": True},
        {"op": "add", "path": "/name/0/given/0", "value": "Léa"},
        {"op": "remove", "path": "/name/0/given/0"},
        {"op": "copy", "from": "/name/0", "path": "/name/-"},
        {"op": "move", "from": "/name/1", "path": "/name/0"},
        {"op": "remove", "path": "/name"},
        {"op": "add", "path": "/birthDate", "value": "1980-02-30"},
        {"op": "add", "path": "/birthDate", "value": "1980-02-28"},
        {"op": "replace", "path": "/id", "value": "someone-else"},
    ]
)


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key != "meta"}


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(GIVEN_NAMES, max_size=2),
    st.lists(PATIENT_OPERATIONS, min_size=1, max_size=4),
)
def test_a_patch_writes_what_the_patch_makes_of_the_record_or_nothing(
    client: TestClient, given_names: list[str], operations: list[dict[str, Any]]
) -> None:
    """Read back, a patched record is what ``jsonpatch`` makes of it on its own, or,
    where that fails or is no valid Patient of the same id, unchanged and refused."""
    name = {"family": SECRET, **({"given": given_names} if given_names else {})}
    pid = created_id(client, patient("generated", name=[name]))
    url = f"/fhir/Patient/{pid}"
    stored = client.get(url).json()
    try:
        expected = without_meta(jsonpatch.apply_patch(stored, operations))
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        expected = None

    response = send_patch(client, url, operations)

    read = client.get(url).json()
    if response.status_code == 200:
        assert without_meta(read) == expected
        return
    assert response.status_code == (409 if expected is None else 422), response.text
    assert SECRET not in response.text
    assert read == stored
