"""The FHIR RESTful interactions through the in-process app: create, read, vread, update,
delete, their conditional forms, history with paging, and type-level search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON
from starlette.testclient import TestClient

from coffre.service import RecordStore

BASE = "http://testserver/fhir"
SYSTEM = "urn:coffre:test:mrn"


def patient(value: str | None = None, system: str = SYSTEM, **fields: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", **fields}
    if value is not None:
        resource["identifier"] = [{"system": system, "value": value}]
    return resource


def post(
    client: TestClient, resource: dict[str, Any], url: str | None = None, **headers: str
) -> httpx.Response:
    url = url or f"/fhir/{resource['resourceType']}"
    return client.post(url, json=resource, headers={**FHIR_JSON, **headers})


def put(client: TestClient, url: str, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return client.put(url, json=resource, headers={**FHIR_JSON, **headers})


def created_id(client: TestClient, resource: dict[str, Any]) -> str:
    response = post(client, resource)
    assert response.status_code == 201, response.text
    resource_id: str = response.json()["id"]
    return resource_id


def assert_outcome(
    response: httpx.Response, status: int, *fragments: str, severity: str = "error"
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == severity
    assert issue["diagnostics"]
    for fragment in fragments:
        assert fragment in issue["diagnostics"], issue["diagnostics"]
    return issue


def follow(
    client: TestClient, url: str, between_pages: Any = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every entry over every page of a Bundle, following ``next`` links; and every page."""
    entries: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        entries.extend(page.get("entry", []))
        links = {link["relation"]: link["url"] for link in page["link"]}
        url = links.get("next", "")
        assert len(pages) < 50, "the next links never end"
        if between_pages is not None and len(pages) == 1:
            between_pages()
    return entries, pages


def version_of(entry: dict[str, Any]) -> tuple[str, str]:
    """(reference, versionId) of a history entry, deletions included."""
    reference = entry["fullUrl"].removeprefix(BASE + "/")
    return reference, entry["response"]["etag"].removeprefix('W/"').removesuffix('"')


# -- create -----------------------------------------------------------------------------


def test_create_answers_201_with_location_etag_and_a_server_id(client: TestClient) -> None:
    response = post(client, patient("c-1", id="client-chosen", gender="male"))

    assert response.status_code == 201
    body = response.json()
    new_id = body["id"]
    assert new_id != "client-chosen"
    assert response.headers["location"] == f"{BASE}/Patient/{new_id}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert body["resourceType"] == "Patient"
    assert body["gender"] == "male"
    assert body["identifier"] == [{"system": SYSTEM, "value": "c-1"}]
    assert body["meta"]["versionId"] == "1"
    last_updated = datetime.fromisoformat(body["meta"]["lastUpdated"])
    assert abs((datetime.now(UTC) - last_updated).total_seconds()) < 60
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert modified == last_updated.replace(microsecond=0)
    assert client.get("/fhir/Patient/client-chosen").status_code == 404


@pytest.mark.parametrize(
    "reference",
    ["guidelines/ddi.html", "http://testserver/fhir/Patient/b1", "urn:uuid:not-an-entry"],
)
def test_a_uri_element_named_reference_is_stored_as_sent(
    client: TestClient, reference: str
) -> None:
    """``DetectedIssue.reference`` is a uri, not a Reference: neither refused as a
    malformed reference, nor rewritten as one to this server."""
    issue = {"resourceType": "DetectedIssue", "status": "final", "reference": reference}
    issue_id = created_id(client, issue)
    assert client.get(f"/fhir/DetectedIssue/{issue_id}").json()["reference"] == reference
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": issue, "request": {"method": "POST", "url": "DetectedIssue"}}],
    }
    response = post(client, bundle, url="/fhir")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("reference", "said"),
    [
        ("Patient?identifier=https://www.ramq.gouv.qc.ca/nam|TREE85520318", "Patient?identifier=…"),
        ("urn:uuid:6a1e1b7e-0d2c-4f6a-9c1e-3b5d7f9a1c2e", "names a Bundle's entry"),
        ("URN:uuid:6a1e1b7e-0d2c-4f6a-9c1e-3b5d7f9a1c2e", "names a Bundle's entry"),
        ("Patient/p1?", "Patient/p1? carries a query"),
        ("Patient/p1?_format=json", "Patient/p1?_format=… carries a query"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_reference_only_a_bundle_resolves_is_refused_alone(
    client: TestClient, records: RecordStore, reference: str, said: str, method: str
) -> None:
    """Stored as written, it would name no record: the Observation would be no patient's,
    left out of her access history and of her erasure."""
    observation = {
        "resourceType": "Observation",
        "id": "alone",
        "status": "final",
        "code": {"text": "charge virale"},
        "subject": {"reference": "Patient/p1"},
        "valueString": "détectée",
    }
    client.put("/fhir/Observation/alone", json=observation, headers=FHIR_JSON)
    before = records.storage.last_seq()
    sent = {**observation, "subject": {"reference": reference}}
    if method == "PATCH":
        patch = [{"op": "replace", "path": "/subject/reference", "value": reference}]
        headers = {**FHIR_JSON, "Content-Type": "application/json-patch+json"}
        response = client.patch("/fhir/Observation/alone", json=patch, headers=headers)
    elif method == "PUT":
        response = client.put("/fhir/Observation/alone", json=sent, headers=FHIR_JSON)
    else:
        response = client.post("/fhir/Observation", json=sent, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    assert said in response.text and "TREE85520318" not in response.text
    assert records.storage.last_seq() == before


def test_a_record_stored_with_such_a_reference_before_is_still_patched(
    client: TestClient, records: RecordStore
) -> None:
    """Written before Coffre refused them: a patch of its status must not fail on them,
    while a patch that brings one in is refused."""
    urn = "urn:uuid:6a1e1b7e-0d2c-4f6a-9c1e-3b5d7f9a1c2e"
    observation = {
        "resourceType": "Observation",
        "id": "older",
        "status": "preliminary",
        "code": {"text": "glycémie"},
        "subject": {"reference": urn},
    }
    with records.writer() as writer:
        writer.update("Observation", "older", observation)
    headers = {**FHIR_JSON, "Content-Type": "application/json-patch+json"}
    status = [{"op": "replace", "path": "/status", "value": "final"}]
    patched = client.patch("/fhir/Observation/older", json=status, headers=headers)
    assert patched.status_code == 200, patched.text
    other = [{"op": "add", "path": "/focus", "value": [{"reference": urn.replace("6a", "7b")}]}]
    refused = client.patch("/fhir/Observation/older", json=other, headers=headers)
    assert refused.status_code == 422, refused.text


def test_create_keeps_client_meta_but_sets_version_and_time(client: TestClient) -> None:
    resource = patient(
        meta={"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z", "tag": [{"code": "t"}]}
    )

    body = post(client, resource).json()

    assert body["meta"]["versionId"] == "1"
    assert not body["meta"]["lastUpdated"].startswith("2001")
    assert body["meta"]["tag"] == [{"code": "t"}]


# -- read, vread --------------------------------------------------------------------------


def test_read_returns_the_current_version_with_its_etag(client: TestClient) -> None:
    created = post(client, patient("r-1", gender="female")).json()

    response = client.get(f"/fhir/Patient/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["cache-control"] == "no-store"  # every read reaches the log
    assert parsedate_to_datetime(response.headers["last-modified"]) == datetime.fromisoformat(
        created["meta"]["lastUpdated"]
    ).replace(microsecond=0)


def test_read_with_matching_if_none_match_answers_304(client: TestClient) -> None:
    pid = created_id(client, patient("r-2"))

    not_modified = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    stale = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"0"'})

    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert stale.status_code == 200
    assert stale.json()["id"] == pid


@pytest.mark.parametrize("if_none_match", ['"1"', 'W/"7", W/"1"', "*"])
def test_if_none_match_compares_weakly_and_the_304_names_the_version(
    client: TestClient, if_none_match: str
) -> None:
    """RFC 9110: If-None-Match compares weakly, takes a list or ``*``; a 304 carries the
    ETag the 200 would have (clients keep their cached copy under it)."""
    pid = created_id(client, patient("r-3"))

    response = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": if_none_match})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == 'W/"1"'
    assert "last-modified" in response.headers


def test_vread_answers_304_to_the_version_the_client_holds(client: TestClient) -> None:
    """A vread is a GET like a read: If-None-Match naming its version, or If-Modified-Since
    at or after it was written, is a 304 with its ETag; the same in a batch."""
    pid = created_id(client, patient("r-7"))
    changed = {**patient("r-7"), "id": pid, "gender": "female"}
    assert client.put(f"/fhir/Patient/{pid}", json=changed).status_code == 200
    url = f"/fhir/Patient/{pid}/_history/1"
    held = client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert (held.status_code, held.content, held.headers["etag"]) == (304, b"", 'W/"1"')
    assert client.get(url, headers={"If-None-Match": 'W/"2"'}).status_code == 200
    since = client.get(url).headers["last-modified"]
    assert client.get(url, headers={"If-Modified-Since": since}).status_code == 304
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {
                    "method": "GET",
                    "url": f"Patient/{pid}/_history/1",
                    "ifNoneMatch": 'W/"1"',
                }
            }
        ],
    }
    answered = client.post("/fhir", json=batch).json()["entry"][0]
    assert answered["response"]["status"] == "304 Not Modified"
    assert "resource" not in answered


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def test_read_if_modified_since_answers_304_unless_modified_after(client: TestClient) -> None:
    """RFC 9110 §13.1.3: not modified when last modified at or before the date, which
    counts in whole seconds as Last-Modified does; the 304 carries the ETag."""
    pid = created_id(client, patient("r-4"))
    url = f"/fhir/Patient/{pid}"
    last_modified = client.get(url).headers["last-modified"]
    moment = parsedate_to_datetime(last_modified)

    for since in (last_modified, _http_date(moment + timedelta(days=1))):
        response = client.get(url, headers={"If-Modified-Since": since})
        assert response.status_code == 304, since
        assert response.content == b""
        assert response.headers["etag"] == 'W/"1"'
    earlier = client.get(
        url, headers={"If-Modified-Since": _http_date(moment - timedelta(seconds=1))}
    )
    assert earlier.status_code == 200 and earlier.json()["id"] == pid
    statement = client.get("/fhir/metadata").json()
    reads = {r["type"]: r["conditionalRead"] for r in statement["rest"][0]["resource"]}
    assert reads["Patient"] == "full-support"  # If-Modified-Since and If-None-Match


def test_a_malformed_if_modified_since_is_ignored(client: TestClient) -> None:
    """RFC 9110 §13.1.3: a value that is not an HTTP-date is ignored, however readable
    (here a day a century ahead, which would make a 304 of any read; the dates themselves
    are tested in test_api_http_dates)."""
    pid = created_id(client, patient("r-5"))
    ahead = format_datetime(datetime.now(UTC) + timedelta(days=36500), usegmt=True)
    for header in (ahead.replace("GMT", "+0000"), ahead.lower(), ahead.removesuffix(" GMT")):
        response = client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": header})
        assert response.status_code == 200, header
        assert response.json()["id"] == pid


def test_if_modified_since_is_ignored_beside_if_none_match_or_twice(client: TestClient) -> None:
    """RFC 9110 §13.1.3: If-None-Match, the more accurate, decides alone; a field of more
    than one member is ignored."""
    pid = created_id(client, patient("r-6"))
    url = f"/fhir/Patient/{pid}"
    ahead = _http_date(datetime.now(UTC) + timedelta(days=1))
    stale = client.get(url, headers={"If-None-Match": 'W/"0"', "If-Modified-Since": ahead})
    assert stale.status_code == 200
    twice = client.get(url, headers=[("If-Modified-Since", ahead), ("If-Modified-Since", ahead)])
    assert twice.status_code == 200


def test_read_of_a_missing_resource_is_404(client: TestClient) -> None:
    assert_outcome(client.get("/fhir/Patient/nobody"), 404, "Patient/nobody")


def test_vread_returns_each_version(client: TestClient) -> None:
    pid = created_id(client, patient("v-1", gender="male"))
    assert (
        put(client, f"/fhir/Patient/{pid}", patient("v-1", id=pid, gender="female")).status_code
        == 200
    )

    first = client.get(f"/fhir/Patient/{pid}/_history/1")
    second = client.get(f"/fhir/Patient/{pid}/_history/2")

    assert first.status_code == 200
    assert first.json()["gender"] == "male"
    assert first.json()["meta"]["versionId"] == "1"
    assert first.headers["etag"] == 'W/"1"'
    assert second.status_code == 200
    assert second.json()["gender"] == "female"
    assert second.headers["etag"] == 'W/"2"'
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/3"), 404, "no version 3")
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/abc"), 404)
    # A version id is an id: 01 is not version 1 (it was served as version 1).
    assert_outcome(client.get(f"/fhir/Patient/{pid}/_history/01"), 404, "no version 01")


# -- update -------------------------------------------------------------------------------


def test_update_makes_version_2(client: TestClient) -> None:
    pid = created_id(client, patient("u-1", gender="male"))

    response = put(client, f"/fhir/Patient/{pid}", patient("u-1", id=pid, gender="other"))

    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"] == f"{BASE}/Patient/{pid}/_history/2"
    assert response.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "other"


def test_update_at_a_new_client_id_creates_it(client: TestClient) -> None:
    response = put(client, "/fhir/Patient/chosen-1", patient("u-2", id="chosen-1"))

    assert response.status_code == 201
    assert response.headers["location"] == f"{BASE}/Patient/chosen-1/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    read = client.get("/fhir/Patient/chosen-1")
    assert read.status_code == 200
    assert read.json()["identifier"][0]["value"] == "u-2"


def test_update_with_the_same_content_makes_no_new_version(
    client: TestClient, records: RecordStore
) -> None:
    created = post(client, patient("u-3", gender="male")).json()
    pid = created["id"]
    before = records.storage.last_seq()

    # Sent back as read (with meta), and without meta: both are the same content.
    as_read = put(client, f"/fhir/Patient/{pid}", created)
    without_meta = put(client, f"/fhir/Patient/{pid}", patient("u-3", id=pid, gender="male"))

    for response in (as_read, without_meta):
        assert response.status_code == 200
        assert response.headers["etag"] == 'W/"1"'
        assert response.json()["meta"] == created["meta"]
    assert records.storage.last_seq() == before
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["total"] == 1
    assert len(history.get("entry", [])) == 1


def test_if_match_star_updates_a_record_that_exists_and_creates_none(
    client: TestClient, records: RecordStore
) -> None:
    """RFC 9110's ``If-Match: *``, how a client says "update, never create": a 400 before."""
    pid = created_id(client, patient("m-9"))
    zero = put(client, f"/fhir/Patient/{pid}", patient("m-9", id=pid), **{"If-Match": 'W/"0"'})
    assert zero.status_code == 412  # version 0 is no version, not any version
    star = {"If-Match": "*"}
    updated = put(client, f"/fhir/Patient/{pid}", patient("m-9", id=pid, gender="male"), **star)
    assert updated.status_code == 200 and updated.headers["etag"] == 'W/"2"'
    before = records.storage.last_seq()
    missing = put(client, "/fhir/Patient/never-made", patient("m-9", id="never-made"), **star)
    assert missing.status_code == 412 and "If-Match * updates only a record" in missing.text
    assert client.delete(f"/fhir/Patient/{pid}", headers=star).status_code == 204
    gone = put(client, f"/fhir/Patient/{pid}", patient("m-9", id=pid), **star)
    assert gone.status_code == 412 and records.storage.last_seq() == before + 1


def test_update_with_current_if_match_succeeds(client: TestClient) -> None:
    pid = created_id(client, patient("m-1"))

    response = put(
        client,
        f"/fhir/Patient/{pid}",
        patient("m-1", id=pid, gender="male"),
        **{"If-Match": 'W/"1"'},
    )

    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'


def test_update_with_stale_if_match_is_412_and_changes_nothing(
    client: TestClient, records: RecordStore
) -> None:
    pid = created_id(client, patient("m-2"))
    assert (
        put(client, f"/fhir/Patient/{pid}", patient("m-2", id=pid, gender="male")).status_code
        == 200
    )
    before = records.storage.last_seq()

    response = put(
        client,
        f"/fhir/Patient/{pid}",
        patient("m-2", id=pid, gender="female"),
        **{"If-Match": 'W/"1"'},
    )

    assert_outcome(response, 412, "version 2", "not 1")
    assert records.storage.last_seq() == before
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


def test_if_match_on_a_missing_resource_is_412(client: TestClient) -> None:
    response = put(client, "/fhir/Patient/ghost", patient(id="ghost"), **{"If-Match": 'W/"1"'})

    assert_outcome(response, 412)
    assert client.get("/fhir/Patient/ghost").status_code == 404


# -- delete -------------------------------------------------------------------------------


def test_delete_then_read_is_410_and_history_keeps_the_versions(client: TestClient) -> None:
    pid = created_id(client, patient("d-1", gender="male"))

    response = client.delete(f"/fhir/Patient/{pid}")

    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'
    assert_outcome(client.get(f"/fhir/Patient/{pid}"), 410, "deleted")
    old = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert old.status_code == 200
    assert old.json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["total"] == 2
    deletion, creation = history.get("entry", [])
    assert deletion["request"] == {"method": "DELETE", "url": f"Patient/{pid}"}
    assert deletion["response"]["status"] == "204 No Content"
    assert deletion["response"]["etag"] == 'W/"2"'
    assert "resource" not in deletion
    assert creation["request"] == {"method": "POST", "url": "Patient"}
    assert creation["resource"]["gender"] == "male"


def test_delete_of_a_missing_resource_is_200_with_information(
    client: TestClient, records: RecordStore
) -> None:
    before = records.storage.last_seq()

    response = client.delete("/fhir/Patient/never-was")

    issue = assert_outcome(response, 200, "Patient/never-was", severity="information")
    assert issue["code"] == "informational"
    assert records.storage.last_seq() == before


def test_delete_twice_writes_one_deletion(client: TestClient, records: RecordStore) -> None:
    pid = created_id(client, patient("d-2"))
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    before = records.storage.last_seq()

    assert_outcome(client.delete(f"/fhir/Patient/{pid}"), 200, severity="information")
    assert records.storage.last_seq() == before


def test_update_after_delete_recreates_at_the_next_version(client: TestClient) -> None:
    pid = created_id(client, patient("d-3"))
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204

    response = put(client, f"/fhir/Patient/{pid}", patient("d-3", id=pid, gender="male"))

    assert response.status_code == 201
    assert response.headers["etag"] == 'W/"3"'
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


def test_delete_with_stale_if_match_is_412(client: TestClient) -> None:
    pid = created_id(client, patient("d-4"))

    assert_outcome(client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"9"'}), 412)
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_a_read_whose_if_match_names_another_version_is_412_and_hands_nothing_out(
    client: TestClient, records: RecordStore
) -> None:
    """RFC 9110 §13.1.1 holds If-Match for every method: a client that means to read
    version 1 only is told the record moved on, rather than given version 2."""
    pid = created_id(client, patient("r-if-1"))
    put(client, f"/fhir/Patient/{pid}", patient("r-if-1", id=pid, gender="female"))
    leaves = records.storage.leaf_count()

    stale = client.get(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"1"'})
    old_version = client.get(f"/fhir/Patient/{pid}/_history/1", headers={"If-Match": 'W/"2"'})

    assert_outcome(stale, 412, "at version 2, not 1")
    assert_outcome(old_version, 412, "at version 1, not 2")
    assert records.storage.leaf_count() == leaves
    current = client.get(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"2"'})
    assert current.status_code == 200 and current.json()["gender"] == "female"
    assert_outcome(client.get(f"/fhir/Patient/{pid}", headers={"If-Match": "bogus"}), 400)


# -- Prefer ---------------------------------------------------------------------------------


def test_prefer_return_minimal_answers_headers_only(client: TestClient) -> None:
    created = post(client, patient("p-1"), Prefer="return=minimal")

    assert created.status_code == 201
    assert created.content == b""
    assert created.headers["etag"] == 'W/"1"'
    location = created.headers["location"]
    pid = location.removeprefix(f"{BASE}/Patient/").removesuffix("/_history/1")
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200

    updated = put(
        client,
        f"/fhir/Patient/{pid}",
        patient("p-1", id=pid, gender="male"),
        Prefer="return=minimal",
    )
    assert updated.status_code == 200
    assert updated.content == b""
    assert updated.headers["etag"] == 'W/"2"'


def test_prefer_return_among_other_preferences_is_honoured(client: TestClient) -> None:
    """RFC 7240 separates preferences with commas, as a client asking for a minimal answer
    and strict handling sends them; several Prefer headers count as one list."""
    minimal = post(client, patient("p-4"), Prefer="handling=strict, return=minimal")
    outcome = client.post(
        "/fhir/Patient",
        json=patient("p-5"),
        headers=[
            *FHIR_JSON.items(),
            ("Prefer", "handling=strict"),
            ("Prefer", "return=OperationOutcome"),
        ],
    )

    assert minimal.status_code == 201
    assert minimal.content == b""
    assert_outcome(outcome, 201, "created at version 1", severity="information")


def test_prefer_return_operation_outcome(client: TestClient) -> None:
    response = post(client, patient("p-2"), Prefer="return=OperationOutcome")

    issue = assert_outcome(response, 201, "created at version 1", severity="information")
    assert issue["code"] == "informational"
    assert response.headers["location"].endswith("/_history/1")


def test_prefer_return_operation_outcome_says_when_nothing_was_written(
    client: TestClient,
) -> None:
    """A conditional create that finds its match, or an update that changes nothing,
    writes no version: its outcome says so rather than that a version was stored."""
    first = post(client, patient("p-same"))
    pid = first.json()["id"]
    condition = {"If-None-Exist": f"identifier={SYSTEM}|p-same"}

    matched = post(client, patient("p-same"), Prefer="return=OperationOutcome", **condition)
    same = client.put(
        f"/fhir/Patient/{pid}",
        json=first.json(),
        headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"},
    )

    assert_outcome(
        matched, 200, f"Patient/{pid} left as it was at version 1", severity="information"
    )
    assert_outcome(same, 200, f"Patient/{pid} left as it was at version 1", severity="information")


def test_prefer_return_representation_is_the_resource(client: TestClient) -> None:
    response = post(client, patient("p-3"), Prefer="return=representation")

    assert response.status_code == 201
    assert response.json()["resourceType"] == "Patient"
    assert response.json()["meta"]["versionId"] == "1"


# -- conditional create -------------------------------------------------------------------


def test_conditional_create_with_if_none_exist(client: TestClient, records: RecordStore) -> None:
    condition = {"If-None-Exist": f"identifier={SYSTEM}|cc-1"}
    first = post(client, patient("cc-1", gender="male"), **condition)
    assert first.status_code == 201
    pid = first.json()["id"]
    before = records.storage.last_seq()

    second = post(client, patient("cc-1", gender="female"), **condition)

    assert second.status_code == 200
    assert second.json()["id"] == pid
    assert second.json()["gender"] == "male"
    assert second.headers["location"] == f"{BASE}/Patient/{pid}/_history/1"
    assert second.headers["etag"] == 'W/"1"'
    assert records.storage.last_seq() == before


def test_conditional_create_with_a_query_as_fhirpy_sends_it(
    client: TestClient, records: RecordStore
) -> None:
    url = f"/fhir/Patient?identifier={SYSTEM}|cc-2"
    first = post(client, patient("cc-2"), url)
    assert first.status_code == 201
    before = records.storage.last_seq()

    second = post(client, patient("cc-2", gender="other"), url)

    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert records.storage.last_seq() == before
    assert client.get("/fhir/Patient").json()["total"] == 1


def test_conditional_create_matching_several_is_412(
    client: TestClient, records: RecordStore
) -> None:
    created_id(client, patient("twin"))
    created_id(client, patient("twin"))
    before = records.storage.last_seq()

    response = post(client, patient("twin"), **{"If-None-Exist": f"identifier={SYSTEM}|twin"})

    assert_outcome(response, 412, "matches 2")
    assert records.storage.last_seq() == before


def test_conditional_create_reads_an_unescaped_if_none_exist_as_utf_8(
    client: TestClient, records: RecordStore
) -> None:
    """HTTP carries a header's bytes, which the server would read as Latin-1: a value sent
    as UTF-8 without %-escapes (Élise) then matched nothing, and each retry of the
    create wrote the patient again. (Bytes that are not UTF-8: test_api_http_protocol.)"""
    first = created_id(client, patient("Élise"))
    before = records.storage.last_seq()

    response = client.post(
        "/fhir/Patient",
        json=patient("Élise"),
        headers={**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|Élise".encode()},
    )

    assert response.status_code == 200, response.text
    assert response.json()["id"] == first
    assert records.storage.last_seq() == before


def test_conditional_create_ignores_a_deleted_match(client: TestClient) -> None:
    old = created_id(client, patient("cc-3"))
    assert client.delete(f"/fhir/Patient/{old}").status_code == 204

    response = post(client, patient("cc-3"), **{"If-None-Exist": f"identifier={SYSTEM}|cc-3"})

    assert response.status_code == 201
    assert response.json()["id"] != old


@pytest.mark.parametrize(
    "condition",
    [
        f"{BASE}/Patient?identifier={SYSTEM}|cc-5",  # HAPI FHIR's client: the search URL
        f"Patient?identifier={SYSTEM}|cc-5",
        f"?identifier={SYSTEM}|cc-5",
    ],
)
def test_conditional_create_takes_if_none_exist_as_a_search_url(
    client: TestClient, records: RecordStore, condition: str
) -> None:
    first = created_id(client, patient("cc-5"))
    before = records.storage.last_seq()

    response = post(client, patient("cc-5", gender="other"), **{"If-None-Exist": condition})

    assert response.status_code == 200, response.text
    assert response.json()["id"] == first
    assert records.storage.last_seq() == before


@pytest.mark.parametrize("condition", ["", "_count=1", "_format=json"])
def test_conditional_create_whose_condition_names_no_criteria_is_400(
    client: TestClient, records: RecordStore, condition: str
) -> None:
    """Read as no condition, it would write a duplicate of the record the client meant
    to look for (an empty header was)."""
    before = records.storage.last_seq()

    response = post(client, patient("cc-7"), **{"If-None-Exist": condition})

    assert_outcome(response, 400, "names no search criteria")
    assert records.storage.last_seq() == before


def test_conditional_create_whose_search_url_names_another_type_is_400(
    client: TestClient, records: RecordStore
) -> None:
    before = records.storage.last_seq()

    response = post(client, patient("cc-6"), **{"If-None-Exist": "Observation?code=1234"})

    assert_outcome(response, 400, "Observation", "Patient")
    assert records.storage.last_seq() == before


@pytest.mark.parametrize("condition", ["_count=1", "_format=json", "&", "?"])
def test_an_if_none_exist_without_criteria_is_400_and_creates_nothing(
    client: TestClient, records: RecordStore, condition: str
) -> None:
    before = records.storage.last_seq()

    response = post(client, patient("cc-7"), **{"If-None-Exist": condition})

    assert_outcome(response, 400, "If-None-Exist", "criteria")
    assert records.storage.last_seq() == before


def test_create_with_only_format_in_the_query_is_a_plain_create(client: TestClient) -> None:
    response = post(client, patient("cc-4"), "/fhir/Patient?_format=json")

    assert response.status_code == 201


# -- conditional update and delete ------------------------------------------------------


def test_conditional_update_creates_updates_or_refuses(
    client: TestClient, records: RecordStore
) -> None:
    url = f"/fhir/Patient?identifier={SYSTEM}|cu-1"

    created = put(client, url, patient("cu-1", gender="male"))
    assert created.status_code == 201
    pid = created.json()["id"]
    assert created.headers["location"] == f"{BASE}/Patient/{pid}/_history/1"

    updated = put(client, url, patient("cu-1", gender="female"))
    assert updated.status_code == 200
    assert updated.json()["id"] == pid
    assert updated.headers["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"

    created_id(client, patient("cu-1"))
    before = records.storage.last_seq()
    assert_outcome(put(client, url, patient("cu-1", gender="other")), 412, "matches 2")
    assert records.storage.last_seq() == before


def test_conditional_update_with_another_body_id_is_400(client: TestClient) -> None:
    pid = created_id(client, patient("cu-2"))

    response = put(
        client, f"/fhir/Patient?identifier={SYSTEM}|cu-2", patient("cu-2", id="someone-else")
    )

    assert_outcome(response, 400, "someone-else", pid)


def test_conditional_update_matching_nothing_never_replaces_the_body_ids_record(
    client: TestClient, records: RecordStore
) -> None:
    """No match and a body id: update-as-create at that id, unless a record lives there,
    which the criteria did not select (409, R5 http.html#cond-update); a deleted one may
    be written again, as a plain update would."""
    pid = created_id(client, patient("cu-5", gender="male"))
    url = f"/fhir/Patient?identifier={SYSTEM}|cu-nobody"
    before = records.storage.last_seq()

    refused = put(client, url, patient("cu-nobody", id=pid, gender="other"))

    assert_outcome(refused, 409, f"Patient/{pid}", "exists", "correct the criteria")
    assert records.storage.last_seq() == before
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"
    assert put(client, url, patient("cu-nobody", id="cu-new")).status_code == 201
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    assert put(client, url.replace("cu-nobody", "cu-5b"), patient("cu-5b", id=pid)).status_code in (
        200,
        201,
    )
    assert client.get(f"/fhir/Patient/{pid}").json()["identifier"][0]["value"] == "cu-5b"


@pytest.mark.parametrize("tags", ["*", 'W/"1"', '"7", W/"1"'])
def test_a_write_with_if_none_match_naming_the_record_is_412(
    client: TestClient, records: RecordStore, tags: str
) -> None:
    """RFC 9110 §13.1.2: If-None-Match on an update or delete fails (412, nothing
    written) when the record exists at a version it names, or it is ``*``."""
    pid = created_id(client, patient("inm-1", gender="male"))
    before = records.storage.last_seq()
    changed = patient("inm-1", id=pid, gender="female")
    conditional = f"/fhir/Patient?identifier={SYSTEM}|inm-1"

    for refused in (
        put(client, f"/fhir/Patient/{pid}", changed, **{"If-None-Match": tags}),
        put(client, conditional, changed, **{"If-None-Match": tags}),
        client.delete(f"/fhir/Patient/{pid}", headers={"If-None-Match": tags}),
        client.delete(conditional, headers={"If-None-Match": tags}),
    ):
        assert_outcome(refused, 412, f"Patient/{pid}", "version 1", "nothing was written")
    assert records.storage.last_seq() == before
    assert (
        put(client, f"/fhir/Patient/{pid}", changed, **{"If-None-Match": 'W/"2"'}).status_code
        == 200
    )
    assert (
        put(
            client,
            "/fhir/Patient/inm-new",
            patient("inm-2", id="inm-new"),
            **{"If-None-Match": "*"},
        ).status_code
        == 201
    )


def test_conditional_update_with_if_match_and_no_match_is_412(
    client: TestClient, records: RecordStore
) -> None:
    """If-Match names a version of the matching resource: with none, as a plain update of
    a missing id, nothing is created."""
    url = f"/fhir/Patient?identifier={SYSTEM}|cu-4"
    before = records.storage.last_seq()
    refused = put(client, url, patient("cu-4"), **{"If-Match": 'W/"1"'})
    assert_outcome(refused, 412, "If-Match", "without If-Match")
    assert records.storage.last_seq() == before
    assert put(client, url, patient("cu-4")).status_code == 201
    assert (
        put(client, url, patient("cu-4", gender="male"), **{"If-Match": 'W/"1"'}).status_code == 200
    )


def test_conditional_update_without_criteria_is_400(client: TestClient) -> None:
    assert_outcome(put(client, "/fhir/Patient", patient("cu-3")), 400, "search criteria")


def test_conditional_update_with_a_body_of_another_type_is_400(
    client: TestClient, records: RecordStore
) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    before = records.storage.last_seq()

    response = put(client, f"/fhir/Patient?identifier={SYSTEM}|cu-4", observation)

    assert_outcome(response, 400, "Observation")
    assert records.storage.last_seq() == before


def test_conditional_delete_deletes_every_match_only(client: TestClient) -> None:
    doomed = [created_id(client, patient("cd-1")), created_id(client, patient("cd-1"))]
    kept = created_id(client, patient("cd-2"))

    response = client.delete(f"/fhir/Patient?identifier={SYSTEM}|cd-1")

    assert_outcome(response, 200, "2 Patient deleted", severity="information")
    for pid in doomed:
        assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.get(f"/fhir/Patient/{kept}").status_code == 200
    again = client.delete(f"/fhir/Patient?identifier={SYSTEM}|cd-1")
    assert_outcome(again, 200, "0 Patient deleted", severity="information")


def test_conditional_delete_honours_if_match(client: TestClient) -> None:
    """As a transaction's conditional delete does: a stale version refuses the deletion of
    every match, a bad one is a 400."""
    pid = created_id(client, patient("cd-4"))
    url = f"/fhir/Patient?identifier={SYSTEM}|cd-4"
    assert put(client, f"/fhir/Patient/{pid}", patient("cd-4", id=pid, gender="male")).is_success

    assert_outcome(client.delete(url, headers={"If-Match": 'W/"1"'}), 412, "version 2")
    assert_outcome(client.delete(url, headers={"If-Match": "bogus"}), 400, "If-Match")
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    deleted = client.delete(url, headers={"If-Match": 'W/"2"'})
    assert_outcome(deleted, 200, "1 Patient deleted", severity="information")


def test_conditional_delete_without_criteria_is_400(client: TestClient) -> None:
    pid = created_id(client, patient("cd-3"))

    assert_outcome(client.delete("/fhir/Patient"), 400)
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


# -- history ------------------------------------------------------------------------------


def test_instance_history_pages_newest_first(client: TestClient) -> None:
    pid = created_id(client, patient("h-1"))
    for n in range(2, 6):
        assert (
            put(
                client, f"/fhir/Patient/{pid}", patient("h-1", id=pid, birthDate=f"200{n}")
            ).status_code
            == 200
        )

    entries, pages = follow(client, f"/fhir/Patient/{pid}/_history?_count=2")

    assert [version_of(e) for e in entries] == [(f"Patient/{pid}", str(v)) for v in (5, 4, 3, 2, 1)]
    assert len(pages) == 3
    assert all(page["type"] == "history" and page["total"] == 5 for page in pages)
    assert [e["resource"]["birthDate"] for e in entries[:4]] == ["2005", "2004", "2003", "2002"]
    assert entries[4]["request"]["method"] == "POST"
    assert all(e["request"]["method"] == "PUT" for e in entries[:4])


def test_instance_history_of_a_missing_resource_is_404(client: TestClient) -> None:
    assert_outcome(client.get("/fhir/Patient/nobody/_history"), 404)


def test_type_history_paging_is_stable_across_a_write(client: TestClient) -> None:
    ids = [created_id(client, patient(f"h2-{n}")) for n in range(5)]
    created_id(client, {"resourceType": "Organization", "name": "not a patient"})
    expected = [(f"Patient/{pid}", "1") for pid in reversed(ids)]

    def write() -> None:
        created_id(client, patient("h2-late"))
        assert (
            put(
                client, f"/fhir/Patient/{ids[0]}", patient("h2-0", id=ids[0], gender="male")
            ).status_code
            == 200
        )

    entries, pages = follow(client, "/fhir/Patient/_history?_count=2", between_pages=write)

    assert [version_of(e) for e in entries] == expected
    assert [page["total"] for page in pages] == [5, 5, 5]
    assert client.get("/fhir/Patient/_history").json()["total"] == 7


def test_system_history_paging_is_stable_across_a_write(client: TestClient) -> None:
    org = created_id(client, {"resourceType": "Organization", "name": "Clinique"})
    pid = created_id(
        client, patient("h3-1", managingOrganization={"reference": f"Organization/{org}"})
    )
    obs = created_id(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )
    assert client.delete(f"/fhir/Organization/{org}").status_code == 204
    expected = [
        (f"Organization/{org}", "2"),
        (f"Observation/{obs}", "1"),
        (f"Patient/{pid}", "1"),
        (f"Organization/{org}", "1"),
    ]

    def write() -> None:
        created_id(client, patient("h3-late"))

    entries, pages = follow(client, "/fhir/_history?_count=3", between_pages=write)

    assert [version_of(e) for e in entries] == expected
    assert [page["total"] for page in pages] == [4, 4]
    assert entries[0]["request"]["method"] == "DELETE"
    assert client.get("/fhir/_history").json()["total"] == 5


def test_history_since_lists_only_later_versions(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(1_900_000_000_000_000, 2_000_000_000_000_000, 10_000_000))  # 10 s apart
    monkeypatch.setattr("coffre.service.writer.now_us", lambda: next(clock))
    pid = created_id(client, patient("s-1"))  # 2030-03-17T17:46:40Z
    for gender in ("male", "female"):  # +10 s, +20 s
        assert (
            put(client, f"/fhir/Patient/{pid}", patient("s-1", id=pid, gender=gender)).status_code
            == 200
        )
    other = created_id(client, patient("s-2"))  # +30 s

    def since(url: str, instant: str) -> list[tuple[str, str]]:
        response = client.get(url, params={"_since": instant})
        assert response.status_code == 200, response.text
        return [version_of(e) for e in response.json().get("entry", [])]

    assert since(f"/fhir/Patient/{pid}/_history", "2030-03-17T17:46:45Z") == [
        (f"Patient/{pid}", "3"),
        (f"Patient/{pid}", "2"),
    ]
    assert since("/fhir/Patient/_history", "2030-03-17T18:46:55+01:00") == [
        (f"Patient/{other}", "1"),
        (f"Patient/{pid}", "3"),
    ]
    assert since("/fhir/_history", "2030-03-17T17:47:05Z") == [(f"Patient/{other}", "1")]
    assert since("/fhir/_history", "2030-03-17T17:48:00Z") == []
    assert len(since("/fhir/_history", "2000-01-01T00:00:00Z")) == 4


def test_history_since_includes_a_version_at_that_very_instant(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(1_900_000_000_000_000, 2_000_000_000_000_000, 10_000_000))
    monkeypatch.setattr("coffre.service.writer.now_us", lambda: next(clock))
    pid = created_id(client, patient("s-3"))
    updated = put(client, f"/fhir/Patient/{pid}", patient("s-3", id=pid, gender="male")).json()

    response = client.get(
        f"/fhir/Patient/{pid}/_history", params={"_since": updated["meta"]["lastUpdated"]}
    )

    assert [version_of(e) for e in response.json().get("entry", [])] == [(f"Patient/{pid}", "2")]


def test_history_with_count_zero_has_no_next_link(client: TestClient) -> None:
    created_id(client, patient("z-1"))

    page = client.get("/fhir/Patient/_history?_count=0").json()

    assert page["total"] == 1
    assert [link["relation"] for link in page["link"]] == ["self"]


@pytest.mark.parametrize(
    "parameter", ["_list=List/1", "_sort=-_lastUpdated", "_summary=count", "_type=Patient"]
)
@pytest.mark.parametrize(
    "url", ["/fhir/_history", "/fhir/Patient/_history", "/fhir/Patient/{pid}/_history"]
)
def test_history_refuses_the_filters_it_cannot_apply(
    client: TestClient, url: str, parameter: str
) -> None:
    """A history with ``_list`` listed every version, and said in its self link that it
    had applied it; ``_sort``, ``_summary`` or R5's ``_type`` would be as silently
    ignored."""
    pid = created_id(client, patient("h-1"))

    response = client.get(f"{url.format(pid=pid)}?{parameter}")

    issue = assert_outcome(response, 400, parameter.split("=")[0], "_since")
    assert issue["code"] == "not-supported"


def test_a_strict_history_refuses_what_it_does_not_know_and_a_lenient_one_ignores_it(
    client: TestClient,
) -> None:
    """``since=`` for ``_since`` would list every version: under ``Prefer: handling=strict``
    the client learns of its mistake, as a strict search's would."""
    pid = created_id(client, patient("h-strict"))
    url = f"/fhir/Patient/{pid}/_history?since=2026-01-01&_count=5&_format=json&_pretty=true"

    strict = client.get(url, headers={"Prefer": "handling=strict"})
    lenient = client.get(url)

    assert_outcome(strict, 400, "not since", "_since, _at and _count")
    assert lenient.status_code == 200 and lenient.json()["total"] == 1
    first = client.get(f"/fhir/Patient/{pid}/_history?_count=1")
    paging = next(ln["url"] for ln in first.json()["link"] if ln["relation"] == "self")
    assert client.get(paging, headers={"Prefer": "handling=strict"}).status_code == 200


@pytest.mark.parametrize("path", ["Patient/{pid}/_history", "_history", "Patient"])
def test_a_snapshot_past_the_newest_write_is_refused(client: TestClient, path: str) -> None:
    """Pinned past the end, a history's or a search's later pages would take in the
    writes made meanwhile."""
    pid = created_id(client, patient("h-snap"))
    url = f"/fhir/{path.format(pid=pid)}?_count=1&_snapshot=999999999"
    assert_outcome(client.get(url), 400, "_snapshot=999999999 is past the newest write")


# -- search -------------------------------------------------------------------------------


def search_ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == len(bundle.get("entry", []))
    for entry in bundle.get("entry", []):
        assert entry["search"] == {"mode": "match"}
        assert entry["fullUrl"] == f"{BASE}/Patient/{entry['resource']['id']}"
    return {entry["resource"]["id"] for entry in bundle.get("entry", [])}


def test_search_by_identifier(client: TestClient) -> None:
    a = created_id(client, patient("se-1"))
    b = created_id(client, patient("se-1", system="urn:other"))
    c = created_id(client, patient("se-2"))
    created_id(
        client,
        {"resourceType": "Organization", "identifier": [{"system": SYSTEM, "value": "se-1"}]},
    )

    assert search_ids(client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|se-1"})) == {a}
    assert search_ids(client.get("/fhir/Patient", params={"identifier": "se-1"})) == {a, b}
    assert search_ids(client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|"})) == {a, c}
    assert search_ids(
        client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|se-1,{SYSTEM}|se-2"})
    ) == {a, c}
    assert (
        search_ids(client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|nobody"})) == set()
    )


def test_search_by_id_is_an_or(client: TestClient) -> None:
    a = created_id(client, patient("si-1"))
    b = created_id(client, patient("si-2"))
    created_id(client, patient("si-3"))

    assert search_ids(client.get(f"/fhir/Patient?_id={a},{b}")) == {a, b}
    assert search_ids(client.get(f"/fhir/Patient?_id={a},{b}&identifier={SYSTEM}|si-2")) == {b}
    assert search_ids(client.get(f"/fhir/Organization?_id={a}")) == set()


def test_search_leaves_out_deleted_and_updated_away(client: TestClient) -> None:
    gone = created_id(client, patient("sd-1"))
    moved = created_id(client, patient("sd-1"))
    kept = created_id(client, patient("sd-1"))
    assert client.delete(f"/fhir/Patient/{gone}").status_code == 204
    assert put(client, f"/fhir/Patient/{moved}", patient("sd-9", id=moved)).status_code == 200

    assert search_ids(client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|sd-1"})) == {
        kept
    }
    assert search_ids(client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|sd-9"})) == {
        moved
    }
    assert search_ids(client.get("/fhir/Patient")) == {moved, kept}


def test_post_search_with_a_form(client: TestClient) -> None:
    a = created_id(client, patient("sp-1"))
    b = created_id(client, patient("sp-2"))
    created_id(client, patient("sp-3"))

    response = client.post(
        "/fhir/Patient/_search", data={"identifier": f"{SYSTEM}|sp-1,{SYSTEM}|sp-2"}
    )
    assert search_ids(response) == {a, b}
    mixed = client.post(
        f"/fhir/Patient/_search?_id={a}", data={"identifier": f"{SYSTEM}|sp-1,{SYSTEM}|sp-2"}
    )
    assert search_ids(mixed) == {a}


def test_search_pages_with_count(client: TestClient) -> None:
    ids = {created_id(client, patient(f"pg-{n}")) for n in range(5)}

    entries, pages = follow(client, f"/fhir/Patient?identifier={SYSTEM}|&_count=2")

    found = [e["resource"]["id"] for e in entries]
    assert sorted(found) == sorted(ids)
    assert [len(page.get("entry", [])) for page in pages] == [2, 2, 1]
    # Without _total, a page that stopped reading early leaves the total out; when given,
    # it is exact. The last page read everything that was left: it knows.
    assert all(page.get("total", 5) == 5 for page in pages)
    assert pages[-1]["total"] == 5

    _, counted = follow(client, f"/fhir/Patient?identifier={SYSTEM}|&_count=2&_total=accurate")
    assert [page["total"] for page in counted] == [5, 5, 5]


def test_search_next_link_keeps_repeated_parameters(client: TestClient) -> None:
    for n in range(3):
        created_id(
            client,
            {
                "resourceType": "Patient",
                "identifier": [
                    {"system": "urn:a", "value": str(n)},
                    {"system": "urn:b", "value": str(n)},
                ],
            },
        )
    for n in range(3):
        created_id(client, patient(str(n), system="urn:b"))

    entries, pages = follow(client, "/fhir/Patient?identifier=urn:a|&identifier=urn:b|&_count=2")

    assert [page["total"] for page in pages] == [3, 3]
    assert len({e["resource"]["id"] for e in entries}) == 3


def test_post_search_next_link_can_be_followed(client: TestClient) -> None:
    ids = {created_id(client, patient(f"pn-{n}")) for n in range(3)}
    created_id(client, patient("other", system="urn:other"))

    first = client.post("/fhir/Patient/_search?_count=2", data={"identifier": f"{SYSTEM}|"})
    assert first.status_code == 200
    next_url = next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
    second = client.get(next_url)

    assert second.status_code == 200, second.text
    found = [
        e["resource"]["id"] for e in first.json().get("entry", []) + second.json().get("entry", [])
    ]
    assert sorted(found) == sorted(ids)


def test_read_and_vread_show_what_summary_and_elements_ask(client: TestClient) -> None:
    resource = patient("S-1", name=[{"family": "Roy"}], gender="female", birthDate="1950-01-02")
    resource["text"] = {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">Roy</div>',
    }
    patient_id = created_id(client, resource)
    for url in (f"/fhir/Patient/{patient_id}", f"/fhir/Patient/{patient_id}/_history/1"):
        named = client.get(url, params={"_elements": "name"})
        assert named.status_code == 200 and named.headers["etag"] == 'W/"1"'
        body = named.json()
        assert set(body) == {"resourceType", "id", "meta", "name"}
        assert body["meta"]["tag"][-1]["code"] == "SUBSETTED"
        data = client.get(url, params={"_summary": "data"}).json()
        assert "text" not in data and data["birthDate"] == "1950-01-02"
        assert set(client.get(url, params={"_summary": "text"}).json()) == {
            "resourceType",
            "id",
            "meta",
            "text",
        }
        whole = client.get(url, params={"_summary": "false"})
        assert whole.content == client.get(url).content
        for bad in ("count", "maybe"):
            assert_outcome(client.get(url, params={"_summary": bad}), 400, "_summary")


def test_a_read_s_elements_keep_the_mandatory_elements(client: TestClient) -> None:
    """search.html#elements: mandatory elements are returned whether requested or not; a
    kept element comes whole (a Patient's link with its mandatory other and type), and a
    primitive with its extensions (``_birthDate``)."""
    linked = created_id(client, patient("M-0"))
    resource = patient(
        "M-1",
        birthDate="1950-01-02",
        _birthDate={"extension": [{"url": "urn:t", "valueString": "approx."}]},
        link=[{"other": {"reference": f"Patient/{linked}"}, "type": "seealso"}],
    )
    patient_id = created_id(client, resource)
    kept = client.get(f"/fhir/Patient/{patient_id}", params={"_elements": "link,birthDate"})
    assert kept.status_code == 200, kept.text
    body = kept.json()
    assert set(body) == {"resourceType", "id", "meta", "link", "birthDate", "_birthDate"}
    assert body["link"] == resource["link"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 72},
    }
    observation_id = created_id(client, observation)
    for url in (
        f"/fhir/Observation/{observation_id}",
        f"/fhir/Observation/{observation_id}/_history/1",
    ):
        body = client.get(url, params={"_elements": "id"}).json()
        assert set(body) == {"resourceType", "id", "meta", "status", "code"}, url
        assert body["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_a_decimal_keeps_its_written_precision(client: TestClient) -> None:
    """A lab's 7.20 mmol/L is not 7.2 (FHIR: a decimal's precision has a meaning): it is
    sealed, read back, listed and searched as written."""
    body = (
        b'{"resourceType": "Observation", "id": "glucose", "status": "final",'
        b' "code": {"text": "glucose"}, "subject": {"reference": "Patient/p"},'
        b' "valueQuantity": {"value": 7.20, "unit": "mmol/L"},'
        b' "referenceRange": [{"low": {"value": 3.90}, "high": {"value": 6.1E0}}]}'
    )
    written = b'"valueQuantity":{"unit":"mmol/L","value":7.20}'
    response = client.put("/fhir/Observation/glucose", content=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    for url in (
        "/fhir/Observation/glucose",
        "/fhir/Observation/glucose/_history/1",
        "/fhir/Observation?value-quantity=7.2",
        "/fhir/Observation/_history",
    ):
        read = client.get(url)
        assert written in read.content and b'"value":3.90' in read.content, url
        assert b'"value":6.1E0' in read.content, url
    unchanged = client.put("/fhir/Observation/glucose", content=body, headers=FHIR_JSON)
    assert unchanged.json()["meta"]["versionId"] == "1"
