"""Transaction and batch Bundles POSTed to the FHIR base."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import FHIR_JSON
from starlette.testclient import TestClient

from coffre.service import RecordStore

BASE = "http://testserver/fhir"
SYSTEM = "urn:coffre:test:mrn"
ORG_SYSTEM = "urn:coffre:test:org"
PATIENT_URN = "urn:uuid:6a1e1b7e-0000-4000-8000-000000000001"
ORG_URN = "urn:uuid:6a1e1b7e-0000-4000-8000-000000000002"


def patient(value: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}], **fields}


def observation(subject: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": subject},
        **fields,
    }


def entry(
    method: str,
    url: str,
    resource: dict[str, Any] | None = None,
    full_url: str | None = None,
    **request: str,
) -> dict[str, Any]:
    item: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        item["resource"] = resource
    if full_url is not None:
        item["fullUrl"] = full_url
    return item


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, **({"entry": list(entries)} if entries else {})}


def send(client: TestClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/fhir", json=body, headers={**FHIR_JSON, **headers})


def created_id(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    resource_id: str = response.json()["id"]
    return resource_id


def id_of(result: dict[str, Any], resource_type: str) -> str:
    """The id in a response entry's location ``Type/id/_history/n``."""
    kind, resource_id, history, _ = result["response"]["location"].split("/")
    assert (kind, history) == (resource_type, "_history")
    return resource_id


def assert_outcome(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["diagnostics"]
    for fragment in fragments:
        assert fragment in issue["diagnostics"], issue["diagnostics"]
    return issue


def total(client: TestClient, url: str) -> int:
    response = client.get(url)
    assert response.status_code == 200, response.text
    count: int = response.json()["total"]
    return count


# -- transaction ------------------------------------------------------------------------


def test_transaction_rewrites_urn_uuid_references(client: TestClient, records: RecordStore) -> None:
    body = bundle(
        "transaction",
        entry("POST", "Observation", observation(PATIENT_URN, performer=[{"reference": ORG_URN}])),
        entry(
            "POST",
            "Patient",
            patient("t-1", managingOrganization={"reference": ORG_URN}),
            PATIENT_URN,
        ),
        entry("POST", "Organization", {"resourceType": "Organization", "name": "CLSC"}, ORG_URN),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["resourceType"] == "Bundle"
    assert answer["type"] == "transaction-response"
    results = answer["entry"]
    assert [r["response"]["status"] for r in results] == ["201 Created"] * 3
    assert [r["response"]["etag"] for r in results] == ['W/"1"'] * 3
    obs, pid, org = (
        id_of(results[0], "Observation"),
        id_of(results[1], "Patient"),
        id_of(results[2], "Organization"),
    )
    assert results[1]["fullUrl"] == f"{BASE}/Patient/{pid}"
    assert "resource" not in results[1]
    stored_obs = client.get(f"/fhir/Observation/{obs}").json()
    assert stored_obs["subject"] == {"reference": f"Patient/{pid}"}
    assert stored_obs["performer"] == [{"reference": f"Organization/{org}"}]
    assert client.get(f"/fhir/Patient/{pid}").json()["managingOrganization"] == {
        "reference": f"Organization/{org}"
    }
    assert records.storage.last_seq() == 3


BINARY_URN = "urn:uuid:6a1e1b7e-0000-4000-8000-000000000003"


def _conditional_organization(value: str) -> dict[str, Any]:
    """An entry that creates an organisation unless one has the identifier ``value``."""
    identifier = {"system": ORG_SYSTEM, "value": value}
    resource = {"resourceType": "Organization", "identifier": [identifier]}
    criteria = f"identifier={ORG_SYSTEM}|{value}"
    return entry("POST", "Organization", resource, ORG_URN, ifNoneExist=criteria)


def _linking(target: str, urn: str | None = None) -> dict[str, str]:
    """Narrative links to ``target``, in both quote styles, and one to ``urn`` (``target``
    by default) followed by a path, which only starts with it."""
    div = (
        f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{target}">a</a>'
        f"<img alt='b' src='{target}'/><a href=\"{urn or target}/x\">c</a></div>"
    )
    return {"status": "generated", "div": div}


def test_transaction_rewrites_fullurls_in_uri_elements_and_the_narrative(
    client: TestClient,
) -> None:
    """http.html#trules: a plain create's and a conditional create's fullUrl are replaced
    in elements of a uri type (url, canonical, uri) and the narrative's href and src, as
    whole values only; a string or a markdown that holds one is no link, left alone."""
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "description": BINARY_URN,
        "content": [
            {"attachment": {"url": BINARY_URN}},
            {"attachment": {"url": BINARY_URN + "/x"}},
        ],
        "text": _linking(BINARY_URN),
        "extension": [
            {"url": "http://coffre.test/canonical", "valueCanonical": BINARY_URN},
            {"url": "http://coffre.test/uri", "valueUri": ORG_URN},
            {"url": "http://coffre.test/string", "valueString": BINARY_URN},
            {"url": "http://coffre.test/markdown", "valueMarkdown": ORG_URN},
        ],
    }
    body = bundle(
        "transaction",
        entry(
            "POST", "Binary", {"resourceType": "Binary", "contentType": "text/plain"}, BINARY_URN
        ),
        _conditional_organization("o"),
        entry("POST", "DocumentReference", document),
        entry("POST", "Observation", observation(PATIENT_URN, text=_linking(ORG_URN))),
        entry("POST", "Patient", patient("l-1"), PATIENT_URN),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    binary, org = id_of(results[0], "Binary"), id_of(results[1], "Organization")
    stored = client.get(f"/fhir/DocumentReference/{id_of(results[2], 'DocumentReference')}").json()
    assert [c["attachment"]["url"] for c in stored["content"]] == [
        f"Binary/{binary}",
        BINARY_URN + "/x",
    ]
    values = [next(v for k, v in e.items() if k.startswith("value")) for e in stored["extension"]]
    assert values == [f"Binary/{binary}", f"Organization/{org}", BINARY_URN, ORG_URN]
    assert stored["description"] == BINARY_URN
    assert stored["text"] == _linking(f"Binary/{binary}", BINARY_URN)
    obs = client.get(f"/fhir/Observation/{id_of(results[3], 'Observation')}").json()
    assert obs["text"] == _linking(f"Organization/{org}", ORG_URN)


def test_a_batch_leaves_fullurls_in_uri_elements_alone(client: TestClient) -> None:
    """A batch's entries do not name each other (http.html#brules): no link is rewritten."""
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"url": BINARY_URN}}],
        "text": _linking(BINARY_URN),
    }
    body = bundle(
        "batch",
        entry(
            "POST", "Binary", {"resourceType": "Binary", "contentType": "text/plain"}, BINARY_URN
        ),
        entry("POST", "DocumentReference", document),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    stored = client.get(
        f"/fhir/DocumentReference/{id_of(response.json()['entry'][1], 'DocumentReference')}"
    ).json()
    assert stored["content"][0]["attachment"]["url"] == BINARY_URN
    assert stored["text"]["div"] == _linking(BINARY_URN)["div"]


def test_a_uri_parameter_finds_what_a_transaction_rewrote(client: TestClient) -> None:
    """The index holds the rewritten value: a ValueSet whose url was a conditional
    create's fullUrl is found by the url it was written with (tokens computed under the
    write lock), a Library whose url was a plain create's too (computed before it)."""
    body = bundle(
        "transaction",
        _conditional_organization("u"),
        entry(
            "POST", "Binary", {"resourceType": "Binary", "contentType": "text/plain"}, BINARY_URN
        ),
        entry("POST", "ValueSet", {"resourceType": "ValueSet", "status": "active", "url": ORG_URN}),
        entry(
            "POST",
            "Library",
            {
                "resourceType": "Library",
                "status": "active",
                "url": BINARY_URN,
                "type": {"text": "asset"},
            },
        ),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    org, binary = id_of(results[0], "Organization"), id_of(results[1], "Binary")
    assert total(client, f"/fhir/ValueSet?url=Organization/{org}") == 1
    assert total(client, f"/fhir/ValueSet?url={ORG_URN}") == 0
    assert total(client, f"/fhir/Library?url=Binary/{binary}") == 1
    assert total(client, f"/fhir/Library?url={BINARY_URN}") == 0


def test_transaction_references_to_updates_are_found_by_search(client: TestClient) -> None:
    """References to an update of a given id (settled before the write lock) and to a
    conditional update (settled under it) are rewritten, and the written resources are
    found by them."""
    existing = created_id(client, patient("t-5"))
    by_id, by_query = PATIENT_URN, "urn:uuid:6a1e1b7e-0000-4000-8000-000000000003"
    body = bundle(
        "transaction",
        entry("POST", "Observation", observation(by_id)),
        entry("POST", "Observation", observation(by_query, code={"text": "height"})),
        entry("PUT", f"Patient/{existing}", patient("t-5", id=existing), by_id),
        entry("PUT", f"Patient?identifier={SYSTEM}|t-6", patient("t-6"), by_query),
    )

    results = send(client, body).json()["entry"]

    created = id_of(results[3], "Patient")
    for subject, text in ((existing, "weight"), (created, "height")):
        found = client.get(f"/fhir/Observation?subject=Patient/{subject}").json()
        assert [e["resource"]["code"]["text"] for e in found["entry"]] == [text]
        assert found["entry"][0]["resource"]["subject"] == {"reference": f"Patient/{subject}"}


def test_transaction_references_of_every_kind_are_found_by_search(client: TestClient) -> None:
    """Whether a reference is settled before the write lock (to a plain create, to an
    update of a given id) or under it (to a conditional create or update, a conditional
    reference), the Observation is found by every parameter that reads it."""
    by_id = created_id(client, patient("k-2"))
    matched = created_id(client, patient("k-5"))
    urns = [f"urn:uuid:6a1e1b7e-0000-4000-8000-00000000001{n}" for n in range(4)]
    targets = [*urns, f"Patient?identifier={SYSTEM}|k-5"]
    body = bundle(
        "transaction",
        entry("POST", "Patient", patient("k-1"), urns[0]),
        entry("PUT", f"Patient/{by_id}", patient("k-2", id=by_id), urns[1]),
        entry("PUT", f"Patient?identifier={SYSTEM}|k-3", patient("k-3"), urns[2]),
        entry("POST", "Patient", patient("k-4"), urns[3], ifNoneExist=f"identifier={SYSTEM}|k-4"),
        *(
            entry("POST", "Observation", observation(t, performer=[{"reference": t}]))
            for t in targets
        ),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    patients = [id_of(results[0], "Patient"), by_id, *(id_of(r, "Patient") for r in results[2:4])]
    for pid, result in zip([*patients, matched], results[4:], strict=True):
        observation_id = id_of(result, "Observation")
        for query in (
            f"subject=Patient/{pid}",
            f"patient={pid}",
            f"performer=Patient/{pid}",
            f"subject={BASE}/Patient/{pid}",
        ):
            found = client.get(f"/fhir/Observation?{query}").json()
            assert [e["resource"]["id"] for e in found.get("entry", [])] == [observation_id], query


def test_transaction_with_prefer_representation_returns_the_resources(client: TestClient) -> None:
    body = bundle(
        "transaction",
        entry("POST", "Patient", patient("t-2"), PATIENT_URN),
        entry("POST", "Observation", observation(PATIENT_URN)),
    )

    results = send(client, body, Prefer="return=representation").json()["entry"]

    pid = id_of(results[0], "Patient")
    assert results[0]["resource"]["id"] == pid
    assert results[0]["resource"]["meta"]["versionId"] == "1"
    assert results[1]["resource"]["resourceType"] == "Observation"
    assert results[1]["resource"]["subject"] == {"reference": f"Patient/{pid}"}


def test_transaction_put_creates_or_updates(client: TestClient) -> None:
    existing = created_id(client, patient("t-3"))
    body = bundle(
        "transaction",
        entry("PUT", f"Patient/{existing}", patient("t-3", id=existing, gender="male")),
        entry("PUT", "Patient/brand-new", patient("t-4", id="brand-new")),
    )

    results = send(client, body).json()["entry"]

    assert [r["response"]["status"] for r in results] == ["200 OK", "201 Created"]
    assert results[0]["response"]["location"] == f"Patient/{existing}/_history/2"
    assert results[1]["response"]["location"] == "Patient/brand-new/_history/1"
    assert client.get(f"/fhir/Patient/{existing}").json()["gender"] == "male"
    assert client.get("/fhir/Patient/brand-new").status_code == 200


def test_transaction_runs_deletes_first_and_reads_last(client: TestClient) -> None:
    p1 = created_id(client, patient("t-5", gender="male"))
    p2 = created_id(client, patient("t-6"))
    old = created_id(client, patient("t-7"))
    body = bundle(
        "transaction",
        entry("GET", f"Patient/{p1}"),
        entry("PUT", f"Patient/{p1}", patient("t-5", id=p1, gender="female")),
        entry("POST", "Patient", patient("t-7")),
        entry("DELETE", f"Patient/{p2}"),
        entry("DELETE", f"Patient?identifier={SYSTEM}|t-7"),
        entry("GET", f"Patient?identifier={SYSTEM}|t-7"),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    # Answers in the order of the request, whatever order the entries ran in.
    read = results[0]
    assert read["response"]["status"] == "200 OK"
    assert read["resource"]["gender"] == "female"  # the GET ran after the PUT
    assert read["response"]["etag"] == 'W/"2"'
    assert results[1]["response"]["status"] == "200 OK"
    assert results[2]["response"]["status"] == "201 Created"
    new = id_of(results[2], "Patient")
    assert results[3]["response"]["status"] == "204 No Content"
    assert results[4]["response"]["status"] == "204 No Content"
    # The conditional DELETE ran before the POST: it removed the old t-7, not the new one.
    search = results[5]["resource"]
    assert search["type"] == "searchset"
    assert [e["resource"]["id"] for e in search["entry"]] == [new]
    assert client.get(f"/fhir/Patient/{p2}").status_code == 410
    assert client.get(f"/fhir/Patient/{old}").status_code == 410
    assert client.get(f"/fhir/Patient/{new}").status_code == 200


def test_transaction_vread_and_history_entries(client: TestClient) -> None:
    pid = created_id(client, patient("t-8", gender="male"))
    body = bundle(
        "transaction",
        entry("GET", f"Patient/{pid}/_history/1"),
        entry("PUT", f"Patient/{pid}", patient("t-8", id=pid, gender="female")),
    )

    results = send(client, body).json()["entry"]

    assert results[0]["resource"]["gender"] == "male"
    assert results[0]["response"]["location"] == f"Patient/{pid}/_history/1"


def test_transaction_vread_finds_the_version_the_transaction_writes(client: TestClient) -> None:
    """GETs run after the writes (http.html#trules): a vread of the version a PUT of the
    same Bundle makes finds it, as a read does."""
    pid = created_id(client, patient("t-16", gender="male"))
    body = bundle(
        "transaction",
        entry("GET", f"Patient/{pid}/_history/2"),
        entry("PUT", f"Patient/{pid}", patient("t-16", id=pid, gender="female")),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    read = response.json()["entry"][0]
    assert read["resource"]["gender"] == "female"
    assert read["response"]["location"] == f"Patient/{pid}/_history/2"


def test_transaction_if_none_exist_reuses_the_match(
    client: TestClient, records: RecordStore
) -> None:
    existing = created_id(client, patient("t-9", gender="male"))
    before = records.storage.last_seq()
    body = bundle(
        "transaction",
        entry(
            "POST",
            "Patient",
            patient("t-9", gender="female"),
            PATIENT_URN,
            ifNoneExist=f"identifier={SYSTEM}|t-9",
        ),
        entry("POST", "Observation", observation(PATIENT_URN)),
        entry("POST", "Patient", patient("t-10"), ifNoneExist=f"identifier={SYSTEM}|t-10"),
    )

    results = send(client, body).json()["entry"]

    assert results[0]["response"]["status"] == "200 OK"
    assert results[0]["response"]["location"] == f"Patient/{existing}/_history/1"
    assert results[2]["response"]["status"] == "201 Created"
    obs = id_of(results[1], "Observation")
    assert client.get(f"/fhir/Observation/{obs}").json()["subject"] == {
        "reference": f"Patient/{existing}"
    }
    assert client.get(f"/fhir/Patient/{existing}").json()["gender"] == "male"
    assert records.storage.last_seq() == before + 2


def test_transaction_if_none_exist_as_a_search_url_as_hapi_writes_it(
    client: TestClient, records: RecordStore
) -> None:
    existing = created_id(client, patient("t-11"))
    before = records.storage.last_seq()
    condition = f"Patient?identifier={SYSTEM}|t-11"
    body = bundle(
        "transaction",
        entry("POST", "Patient", patient("t-11"), PATIENT_URN, ifNoneExist=condition),
        entry("POST", "Observation", observation(condition)),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    assert results[0]["response"]["location"] == f"Patient/{existing}/_history/1"
    obs = id_of(results[1], "Observation")
    assert client.get(f"/fhir/Observation/{obs}").json()["subject"] == {
        "reference": f"Patient/{existing}"
    }
    assert records.storage.last_seq() == before + 1


def test_transaction_resolves_conditional_references(client: TestClient) -> None:
    org = created_id(
        client,
        {"resourceType": "Organization", "identifier": [{"system": ORG_SYSTEM, "value": "clsc-1"}]},
    )
    conditional = f"Organization?identifier={ORG_SYSTEM}|clsc-1"
    body = bundle(
        "transaction",
        entry(
            "POST",
            "Patient",
            patient("t-11", managingOrganization={"reference": conditional}),
            PATIENT_URN,
        ),
        entry(
            "POST", "Observation", observation(PATIENT_URN, performer=[{"reference": conditional}])
        ),
    )

    results = send(client, body).json()["entry"]

    pid, obs = id_of(results[0], "Patient"), id_of(results[1], "Observation")
    assert client.get(f"/fhir/Patient/{pid}").json()["managingOrganization"] == {
        "reference": f"Organization/{org}"
    }
    assert client.get(f"/fhir/Observation/{obs}").json()["performer"] == [
        {"reference": f"Organization/{org}"}
    ]


def test_transaction_with_an_unresolvable_conditional_reference_writes_nothing(
    client: TestClient, records: RecordStore
) -> None:
    body = bundle(
        "transaction",
        entry("POST", "Patient", patient("t-12")),
        entry(
            "POST",
            "Patient",
            patient(
                "t-13",
                managingOrganization={"reference": f"Organization?identifier={ORG_SYSTEM}|none"},
            ),
        ),
    )

    response = send(client, body)
    assert_outcome(response, 404, "entry[1]", "Organization?identifier=… matches no resource")
    assert "|none" not in response.text  # a value names somebody: an import prints these
    assert records.storage.last_seq() == 0
    assert total(client, "/fhir/Patient") == 0


def test_a_conditional_reference_to_no_resource_type_is_400(
    client: TestClient, records: RecordStore
) -> None:
    """A typo: stored as written, it would be a reference to nothing."""
    organisation = {"reference": "Organisation?identifier=x"}
    body = bundle(
        "transaction", entry("POST", "Patient", patient("t-14", managingOrganization=organisation))
    )

    assert_outcome(send(client, body), 400, "'Organisation'", "not an R4 resource type")
    assert records.storage.last_seq() == 0


def test_a_post_entry_s_query_is_its_condition(client: TestClient, records: RecordStore) -> None:
    """As over REST (fhirpy sends a conditional create so): not ignored."""
    pid = created_id(client, patient("t-15"))
    query = f"Patient?identifier={SYSTEM}|t-15"

    response = send(client, bundle("transaction", entry("POST", query, patient("t-15"))))

    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["location"].startswith(f"Patient/{pid}/")
    assert total(client, "/fhir/Patient") == 1
    both = entry("POST", query, patient("t-15"), ifNoneExist=f"identifier={SYSTEM}|t-15")
    assert_outcome(send(client, bundle("transaction", both)), 400, "not both")


def test_transaction_with_an_ambiguous_conditional_reference_is_412(
    client: TestClient, records: RecordStore
) -> None:
    for _ in range(2):
        created_id(
            client,
            {
                "resourceType": "Organization",
                "identifier": [{"system": ORG_SYSTEM, "value": "twin"}],
            },
        )
    before = records.storage.last_seq()
    body = bundle(
        "transaction",
        entry(
            "POST",
            "Patient",
            patient(
                "t-14",
                managingOrganization={"reference": f"Organization?identifier={ORG_SYSTEM}|twin"},
            ),
        ),
    )

    response = send(client, body)
    assert_outcome(response, 412, "entry[0]", "Organization?identifier=… matches 2")
    assert "twin" not in response.text  # the criteria's values are health data
    assert records.storage.last_seq() == before


def _valid_first() -> dict[str, Any]:
    return entry("POST", "Patient", patient("bad-0"), PATIENT_URN)


@pytest.mark.parametrize(
    ("second", "status", "fragment"),
    [
        pytest.param(
            entry("POST", "Observation", {**observation(PATIENT_URN), "status": "bogus"}),
            422,
            "Observation.status",
            id="invalid-resource",
        ),
        pytest.param(
            entry(
                "POST", "Observation", observation("urn:uuid:00000000-0000-4000-8000-00000000dead")
            ),
            400,
            "urn:uuid:00000000-0000-4000-8000-00000000dead",
            id="dangling-urn",
        ),
        pytest.param(
            entry("PUT", "Patient/p-x", patient("bad-1", id="p-y")),
            400,
            "'p-y'",
            id="put-id-mismatch",
        ),
        pytest.param(
            entry("PUT", "Patient/p-x", patient("bad-1", id="p-x"), ifMatch='W/"3"'),
            412,
            "If-Match",
            id="put-stale-if-match",
        ),
        pytest.param(
            entry("PUT", "Patient", patient("bad-1")), 400, "a PUT needs an id", id="put-without-id"
        ),
        pytest.param(
            entry("POST", "Patient", {"resourceType": "Organization"}),
            400,
            "Organization",
            id="post-type-mismatch",
        ),
        pytest.param(entry("POST", "Patient"), 400, "needs a resource", id="post-without-resource"),
        pytest.param(entry("PATCH", "Patient/p-x"), 400, "PATCH", id="patch"),
        pytest.param(entry("GET", "Patient/missing"), 404, "Patient/missing", id="get-missing"),
        pytest.param(
            entry("DELETE", "Patient"), 400, "a DELETE needs an id", id="delete-whole-type"
        ),
        pytest.param(
            entry("POST", "Patient", patient("bad-1"), PATIENT_URN),
            400,
            "appears twice",
            id="duplicate-full-url",
        ),
        pytest.param(
            entry("GET", "Patient/p-x/_history"),
            400,
            "not a supported interaction",
            id="history-url",
        ),
        pytest.param(
            entry("DELETE", "Patient/p-x", ifMatch="bogus"),
            400,
            "If-Match",
            id="bad-if-match",
        ),
        pytest.param(
            entry("GET", "http://testserver/fhir/Patient/p-x"),
            400,
            "must be relative to the base (http.html#transaction), as 'Patient/p-x'",
            id="absolute-url-on-this-base",
        ),
        pytest.param(
            entry("POST", "/fhir/Patient", patient("bad-1")),
            400,
            "must be relative to the base (http.html#transaction), as 'Patient'",
            id="url-under-the-base-path",
        ),
        pytest.param(
            entry("GET", "fhir/Patient?identifier=a|b"),
            400,
            "as 'Patient?identifier=a|b'",
            id="search-url-under-the-base-path",
        ),
        pytest.param(
            entry("DELETE", "https://elsewhere.example/fhir/Patient/p-x"),
            400,
            "must be relative to the base (http.html#transaction), such as 'Patient/123'",
            id="absolute-url-elsewhere",
        ),
        pytest.param(entry("DELETE", "Foo/1"), 404, "no resource type 'Foo'", id="delete-unknown"),
        pytest.param(entry("GET", "Foo?x=1"), 404, "no resource type 'Foo'", id="search-unknown"),
        pytest.param(
            entry("DELETE", "Patient/p-x/_history/1"), 405, "DELETE", id="delete-a-version"
        ),
        pytest.param(
            entry("PUT", "Patient/p-x/_history/1", patient("bad-1", id="p-x")),
            405,
            "PUT",
            id="update-a-version",
        ),
        pytest.param(
            entry("POST", "Patient/p-x", patient("bad-1")), 405, "POST", id="create-at-an-id"
        ),
    ],
)
def test_transaction_with_one_bad_entry_changes_nothing(
    client: TestClient, records: RecordStore, second: dict[str, Any], status: int, fragment: str
) -> None:
    response = send(client, bundle("transaction", _valid_first(), second))

    assert response.status_code == status, response.text
    assert_outcome(response, status, fragment, "entry[1]")
    assert records.storage.last_seq() == 0
    assert total(client, "/fhir/Patient") == 0
    assert total(client, "/fhir/_history") == 0
    assert client.get("/fhir/Patient/p-x").status_code == 404


def test_transaction_failing_late_rolls_back_earlier_writes(
    client: TestClient, records: RecordStore
) -> None:
    keep = created_id(client, patient("rb-1", gender="male"))
    other = created_id(client, patient("rb-3", gender="male"))
    before = records.storage.last_seq()
    body = bundle(
        "transaction",
        entry("DELETE", f"Patient/{keep}"),
        entry("POST", "Patient", patient("rb-2")),
        entry(
            "PUT", f"Patient/{other}", patient("rb-3", id=other, gender="female"), ifMatch='W/"2"'
        ),
    )

    # The PUT runs last and its If-Match W/"2" does not hold: the DELETE and POST are undone.
    assert_outcome(send(client, body), 412, "entry[2]")
    assert records.storage.last_seq() == before
    assert client.get(f"/fhir/Patient/{keep}").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{other}").json()["gender"] == "male"
    assert total(client, "/fhir/Patient") == 2


@pytest.mark.parametrize(
    "writes",
    [
        pytest.param(
            lambda pid: [
                entry("PUT", f"Patient/{pid}", patient("o-1", id=pid, gender="female")),
                entry("PUT", f"Patient/{pid}", patient("o-1", id=pid, gender="other")),
            ],
            id="two-puts",
        ),
        pytest.param(
            lambda pid: [
                entry("POST", "Observation", observation(PATIENT_URN)),
                entry("PUT", f"Patient/{pid}", patient("o-1", id=pid), PATIENT_URN),
                entry("DELETE", f"Patient/{pid}"),
            ],
            id="put-referenced-and-delete",
        ),
        pytest.param(
            lambda pid: [
                entry("DELETE", f"Patient?identifier={SYSTEM}|o-1"),
                entry("PUT", f"Patient/{pid}", patient("o-1", id=pid, gender="female")),
            ],
            id="conditional-delete-and-put",
        ),
        pytest.param(
            lambda pid: [
                entry("PUT", f"Patient?identifier={SYSTEM}|o-1", patient("o-1", gender="female")),
                entry("PUT", f"Patient/{pid}", patient("o-1", id=pid, gender="other")),
            ],
            id="conditional-put-and-put",
        ),
        pytest.param(
            lambda pid: [
                entry("PUT", f"Patient?identifier={SYSTEM}|o-2", patient("o-2")),
                entry("PUT", f"Patient?identifier={SYSTEM}|o-2", patient("o-2", gender="other")),
            ],
            id="two-conditional-puts-creating",
        ),
    ],
)
def test_transaction_writing_a_resource_twice_is_refused(
    client: TestClient,
    records: RecordStore,
    writes: Callable[[str], list[dict[str, Any]]],
) -> None:
    """http.html#trules: the transaction fails if the identities of its DELETE, POST and
    PUT entries overlap, those a conditional update or delete resolves to included."""
    pid = created_id(client, patient("o-1", gender="male"))
    before = records.storage.last_seq()

    assert_outcome(send(client, bundle("transaction", *writes(pid))), 400, "Patient", "twice")
    assert records.storage.last_seq() == before
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"
    assert total(client, "/fhir/Patient") == 1


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_conditional_update_whose_body_names_another_id_is_400(
    client: TestClient, records: RecordStore, kind: str
) -> None:
    """http.html#cond-update: one match, and a body id that is not the match's: 400."""
    pid = created_id(client, patient("cu-1", gender="male"))
    put = entry(
        "PUT", f"Patient?identifier={SYSTEM}|cu-1", patient("cu-1", id="other", gender="female")
    )

    _refused_alone(client, records, kind, put, pid, 400, "'other'", pid)
    assert client.get("/fhir/Patient/other").status_code == 404


def _refused_alone(
    client: TestClient,
    records: RecordStore,
    kind: str,
    write: dict[str, Any],
    pid: str,
    status: int,
    *said: str,
) -> None:
    """``write`` alone in a Bundle of ``kind`` is refused with ``status`` (the
    transaction's, or the batch entry's), writes nothing, and Patient/``pid`` stays male."""
    before = records.storage.last_seq()

    response = send(client, bundle(kind, write))

    if kind == "transaction":
        assert_outcome(response, status, *said)
    else:
        expected = f"{status} {HTTPStatus(status).phrase}"
        assert response.json()["entry"][0]["response"]["status"] == expected
    assert records.storage.last_seq() == before
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_conditional_update_with_if_match_and_no_match_is_412_as_over_rest(
    client: TestClient, records: RecordStore, kind: str
) -> None:
    """A Bundle's entry answers as the REST interaction does: If-Match names a version of
    the matching resource, and with none nothing is created, with the same advice (the
    entry used to be told that a new id "is at version none")."""
    pid = created_id(client, patient("cu-5", gender="male"))
    put = entry("PUT", f"Patient?identifier={SYSTEM}|cu-6", patient("cu-6"), ifMatch='W/"1"')

    _refused_alone(client, records, kind, put, pid, 412, "If-Match", "without If-Match")
    assert total(client, "/fhir/Patient") == 1


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_conditional_update_matching_nothing_never_replaces_the_body_ids_record(
    client: TestClient, records: RecordStore, kind: str
) -> None:
    """No match, and the body's id names a record the criteria did not select: 409."""
    pid = created_id(client, patient("cu-6", gender="male"))
    put = entry("PUT", f"Patient?identifier={SYSTEM}|nobody", patient("x", id=pid, gender="female"))

    _refused_alone(client, records, kind, put, pid, 409, f"Patient/{pid}", "correct the criteria")


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_transaction_entry_whose_if_none_match_names_the_record_changes_nothing(
    client: TestClient, records: RecordStore, method: str
) -> None:
    pid = created_id(client, patient("inm-3", gender="male"))
    before = records.storage.last_seq()
    changed = patient("inm-3", id=pid, gender="female") if method == "PUT" else None
    write = entry(method, f"Patient/{pid}", changed, ifNoneMatch="*")

    response = send(client, bundle("transaction", write))

    assert_outcome(response, 412, f"Patient/{pid}", "If-None-Match")
    assert records.storage.last_seq() == before
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


@pytest.mark.parametrize("resource_id", [".", ".."])
def test_an_id_that_urls_read_as_a_path_step_is_refused(
    client: TestClient, records: RecordStore, resource_id: str
) -> None:
    """FHIR's id pattern allows ``.`` and ``..``; Patient/.. would be read as /fhir."""
    write = entry("PUT", f"Patient/{resource_id}", {"resourceType": "Patient", "id": resource_id})

    response = send(client, bundle("transaction", write))

    assert_outcome(response, 400, f"{resource_id!r} cannot be an id", "path")
    assert records.storage.last_seq() == 0


def test_head_entries_answer_without_a_body(client: TestClient) -> None:
    pid = created_id(client, patient("head-1"))

    response = send(
        client,
        bundle(
            "batch",
            entry("HEAD", f"Patient/{pid}"),
            entry("HEAD", f"Patient?identifier={SYSTEM}|head-1"),
            entry("GET", f"Patient/{pid}"),
        ),
    )

    head, head_search, get = response.json()["entry"]
    assert head["response"]["status"] == "200 OK" and "resource" not in head
    assert head["response"]["etag"] == 'W/"1"'
    assert head_search["response"]["status"] == "200 OK" and "resource" not in head_search
    assert get["resource"]["id"] == pid


def test_transaction_conditional_creates_with_the_same_criteria_create_one_resource(
    client: TestClient,
) -> None:
    """The second create's criteria match what the first creates: it is not created again,
    and the references to either entry name the one resource."""
    second_urn = "urn:uuid:6a1e1b7e-0000-4000-8000-000000000004"
    criteria = f"identifier={SYSTEM}|cc-1"
    body = bundle(
        "transaction",
        entry("POST", "Patient", patient("cc-1"), PATIENT_URN, ifNoneExist=criteria),
        entry("POST", "Observation", observation(PATIENT_URN)),
        entry("POST", "Patient", patient("cc-1", gender="male"), second_urn, ifNoneExist=criteria),
        entry("POST", "Observation", observation(second_urn, code={"text": "height"})),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    assert [r["response"]["status"] for r in results] == [
        "201 Created",
        "201 Created",
        "200 OK",
        "201 Created",
    ]
    pid = id_of(results[0], "Patient")
    assert results[2]["response"]["location"] == f"Patient/{pid}/_history/1"
    assert total(client, f"/fhir/Patient?identifier={SYSTEM}|cc-1") == 1
    assert total(client, f"/fhir/Observation?subject=Patient/{pid}") == 2


def test_transaction_conditional_reference_names_a_conditional_create_of_the_bundle(
    client: TestClient,
) -> None:
    """http.html#trules resolves conditional references after the creates: one with the
    criteria of a conditional create of the Bundle names what that entry creates."""
    criteria = f"identifier={ORG_SYSTEM}|cc-2"
    organization = {
        "resourceType": "Organization",
        "identifier": [{"system": ORG_SYSTEM, "value": "cc-2"}],
    }
    body = bundle(
        "transaction",
        entry(
            "POST",
            "Patient",
            patient("cc-2", managingOrganization={"reference": f"Organization?{criteria}"}),
        ),
        entry("POST", "Organization", organization, ifNoneExist=criteria),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    pid, org = id_of(results[0], "Patient"), id_of(results[1], "Organization")
    assert client.get(f"/fhir/Patient/{pid}").json()["managingOrganization"] == {
        "reference": f"Organization/{org}"
    }
    assert total(client, f"/fhir/Patient?organization=Organization/{org}") == 1


def test_transaction_if_none_exist_after_a_conditional_delete(client: TestClient) -> None:
    created_id(client, patient("t-15"))
    body = bundle(
        "transaction",
        entry("DELETE", f"Patient?identifier={SYSTEM}|t-15"),
        entry(
            "POST", "Patient", patient("t-15"), PATIENT_URN, ifNoneExist=f"identifier={SYSTEM}|t-15"
        ),
    )

    response = send(client, body)

    if response.status_code == 200:  # else the transaction was refused: also acceptable
        location = response.json()["entry"][1]["response"]["location"]
        assert client.get(f"/fhir/{location.split('/_history')[0]}").status_code == 200
    else:
        assert 400 <= response.status_code < 500


def test_concurrent_transactions_on_the_same_conditional_targets_write_each_once(
    client: TestClient,
) -> None:
    """Two clients send, at the same time, transactions that create a Patient if none has
    its identifier and update an Organization by its identifier: each is written once,
    and every Observation names them."""
    org_urn = "urn:uuid:6a1e1b7e-0000-4000-8000-000000000020"
    rounds = 20

    def transaction(client_name: str, n: int) -> dict[str, Any]:
        organization = {
            "resourceType": "Organization",
            "identifier": [{"system": ORG_SYSTEM, "value": f"cx-{n}"}],
            "name": client_name,
        }
        return bundle(
            "transaction",
            entry(
                "POST",
                "Patient",
                patient(f"cx-{n}"),
                PATIENT_URN,
                ifNoneExist=f"identifier={SYSTEM}|cx-{n}",
            ),
            entry("PUT", f"Organization?identifier={ORG_SYSTEM}|cx-{n}", organization, org_urn),
            entry(
                "POST", "Observation", observation(PATIENT_URN, performer=[{"reference": org_urn}])
            ),
        )

    def run(client_name: str) -> list[int]:
        return [send(client, transaction(client_name, n)).status_code for n in range(rounds)]

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(run, ["a", "b"]))

    assert statuses == [[200] * rounds] * 2
    assert total(client, "/fhir/Patient") == total(client, "/fhir/Organization") == rounds
    for n in range(rounds):
        pid = client.get(f"/fhir/Patient?identifier={SYSTEM}|cx-{n}").json()["entry"][0]
        org = client.get(f"/fhir/Organization?identifier={ORG_SYSTEM}|cx-{n}").json()["entry"][0]
        query = f"patient={pid['resource']['id']}&performer=Organization/{org['resource']['id']}"
        assert total(client, f"/fhir/Observation?{query}") == 2


# -- batch --------------------------------------------------------------------------------


def test_batch_commits_good_entries_and_reports_bad_ones(
    client: TestClient, records: RecordStore
) -> None:
    existing = created_id(client, patient("b-0"))
    body = bundle(
        "batch",
        entry("POST", "Patient", patient("b-1")),
        entry("PUT", f"Patient/{existing}", patient("b-0", id="not-it")),
        entry("POST", "Observation", {**observation(f"Patient/{existing}"), "status": "bogus"}),
        entry("GET", "Patient/missing"),
        entry("DELETE", f"Patient/{existing}"),
        entry("POST", "Patient", patient("b-2")),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "batch-response"
    statuses = [r["response"]["status"] for r in answer["entry"]]
    assert statuses == [
        "201 Created",
        "400 Bad Request",
        "422 Unprocessable Entity",
        "404 Not Found",
        "204 No Content",
        "201 Created",
    ]
    mismatch = answer["entry"][1]["response"]["outcome"]
    assert mismatch["resourceType"] == "OperationOutcome"
    assert "'not-it'" in mismatch["issue"][0]["diagnostics"]
    assert "entry[2]" in answer["entry"][2]["response"]["outcome"]["issue"][0]["diagnostics"]
    for result in (answer["entry"][0], answer["entry"][5]):
        assert client.get(f"/fhir/Patient/{id_of(result, 'Patient')}").status_code == 200
    assert client.get(f"/fhir/Patient/{existing}").status_code == 410
    assert total(client, "/fhir/Observation/_history") == 0
    assert records.storage.last_seq() == 4


def test_batch_read_of_a_deleted_resource_is_410_as_over_rest(client: TestClient) -> None:
    deleted = created_id(client, patient("b-3"))
    assert client.delete(f"/fhir/Patient/{deleted}").status_code == 204
    over_rest = client.get(f"/fhir/Patient/{deleted}").json()["issue"][0]

    answer = send(client, bundle("batch", entry("GET", f"Patient/{deleted}"))).json()

    result = answer["entry"][0]["response"]
    assert result["status"] == "410 Gone"
    assert result["outcome"]["issue"][0] == over_rest


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_a_read_entry_shows_what_summary_and_elements_ask_as_over_rest(
    client: TestClient, kind: str
) -> None:
    """A read or vread entry's ``_summary`` and ``_elements`` were ignored: each entry is
    answered as the same GET over REST, search entries (``_summary=count``) included."""
    pid = created_id(client, patient("b-6", name=[{"family": "Roy"}], birthDate="1950-01-02"))
    oid = created_id(client, observation(f"Patient/{pid}", valueQuantity={"value": 72}))
    urls = (
        f"Patient/{pid}?_elements=name",
        f"Patient/{pid}?_summary=true",
        f"Patient/{pid}?_summary=text",
        f"Patient/{pid}/_history/1?_elements=birthDate",
        f"Observation/{oid}?_elements=id",
        f"Observation?patient={pid}&_summary=count",
        f"Observation?patient={pid}&_elements=valueQuantity",
    )
    answers = send(client, bundle(kind, *(entry("GET", url) for url in urls))).json()["entry"]
    for url, answer in zip(urls, answers, strict=True):
        assert answer["response"]["status"] == "200 OK", (url, answer)
        over_rest = client.get(f"/fhir/{url}").json()
        if over_rest["resourceType"] == "Bundle":
            assert answer["resource"]["total"] == over_rest["total"], url
            assert _shown(answer["resource"]) == _shown(over_rest), url
        else:
            assert answer["resource"] == over_rest, url
    assert set(answers[4]["resource"]) == {"resourceType", "id", "meta", "status", "code"}


def test_a_read_entry_s_unknown_summary_is_400_as_over_rest(client: TestClient) -> None:
    pid = created_id(client, patient("b-7"))
    answer = send(client, bundle("batch", entry("GET", f"Patient/{pid}?_summary=count")))
    result = answer.json()["entry"][0]["response"]
    assert result["status"] == "400 Bad Request"
    assert "_summary=count" in result["outcome"]["issue"][0]["diagnostics"]


def test_a_read_entry_s_if_none_match_and_if_modified_since_answer_304(
    client: TestClient, records: RecordStore
) -> None:
    """Bundle.entry.request.ifNoneMatch and ifModifiedSince (an instant) make a read entry
    conditional as the headers make a read: 304 Not Modified without the resource, each
    logged as a read."""
    pid = created_id(client, patient("b-8"))
    last_updated = client.get(f"/fhir/Patient/{pid}").json()["meta"]["lastUpdated"]
    moment = datetime.fromisoformat(last_updated)
    before = (moment - timedelta(microseconds=1)).isoformat()
    url = f"Patient/{pid}"
    conditions: list[tuple[dict[str, str], str]] = [
        ({"ifNoneMatch": 'W/"1"'}, "304 Not Modified"),
        ({"ifNoneMatch": '"7", W/"1"'}, "304 Not Modified"),
        ({"ifNoneMatch": 'W/"0"'}, "200 OK"),
        ({"ifModifiedSince": last_updated}, "304 Not Modified"),
        ({"ifModifiedSince": before}, "200 OK"),
        ({"ifNoneMatch": 'W/"0"', "ifModifiedSince": last_updated}, "200 OK"),
    ]
    logged = records.storage.leaf_count()
    body = bundle("batch", *(entry("GET", url, **request) for request, _ in conditions))
    answers = send(client, body).json()["entry"]
    for (request, status), answer in zip(conditions, answers, strict=True):
        assert answer["response"]["status"] == status, request
        assert answer["response"]["etag"] == 'W/"1"', request
        assert ("resource" in answer) == (status == "200 OK"), request
    assert records.storage.leaf_count() == logged + len(conditions)
    leap = entry("GET", url, ifModifiedSince="2016-12-31T23:59:60Z")  # the schema takes it
    result = send(client, bundle("batch", leap)).json()["entry"][0]["response"]
    assert result["status"] == "400 Bad Request"
    assert "ifModifiedSince '2016-12-31T23:59:60Z'" in result["outcome"]["issue"][0]["diagnostics"]


def test_batch_entries_cannot_reference_each_other(client: TestClient) -> None:
    body = bundle(
        "batch",
        entry("POST", "Patient", patient("b-3"), PATIENT_URN),
        entry("POST", "Observation", observation(PATIENT_URN)),
    )

    results = send(client, body).json()["entry"]

    assert results[0]["response"]["status"] == "201 Created"
    assert results[1]["response"]["status"] == "400 Bad Request"
    said = results[1]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert PATIENT_URN in said and "entries of a batch do not name each other" in said
    assert "names no entry of this bundle" not in said  # it does name one
    assert total(client, "/fhir/Observation/_history") == 0
    transaction = bundle("transaction", entry("POST", "Observation", observation(ORG_URN)))
    assert_outcome(send(client, transaction), 400, f"{ORG_URN} names no entry of this bundle")


def test_batch_resolves_each_entry_s_conditional_references_afresh(
    client: TestClient,
) -> None:
    """A conditional reference is searched again for each batch entry: an earlier entry may
    have changed what it matches."""
    org = created_id(
        client,
        {"resourceType": "Organization", "identifier": [{"system": ORG_SYSTEM, "value": "b-5"}]},
    )
    conditional = {"reference": f"Organization?identifier={ORG_SYSTEM}|b-5"}
    body = bundle(
        "batch",
        entry("POST", "Patient", patient("b-5", managingOrganization=conditional)),
        entry("DELETE", f"Organization/{org}"),
        entry("POST", "Patient", patient("b-6", managingOrganization=conditional)),
    )

    results = send(client, body).json()["entry"]

    statuses = [r["response"]["status"] for r in results]
    assert statuses == ["201 Created", "204 No Content", "404 Not Found"]
    assert total(client, f"/fhir/Patient?identifier={SYSTEM}|b-6") == 0


def test_batch_with_prefer_representation(client: TestClient) -> None:
    body = bundle("batch", entry("POST", "Patient", patient("b-4")))

    plain = send(client, body).json()["entry"][0]
    full = send(client, body, Prefer="return=representation").json()["entry"][0]

    assert "resource" not in plain
    assert full["resource"]["identifier"] == [{"system": SYSTEM, "value": "b-4"}]
    assert full["resource"]["id"] == id_of(full, "Patient")


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_prefer_operation_outcome_tells_what_each_write_did(client: TestClient, kind: str) -> None:
    """http.html#transaction-response: ``response.outcome`` carries an entry's
    OperationOutcome; with ``Prefer: return=OperationOutcome`` each write says what it
    did, and no entry carries its resource."""
    existing = created_id(client, patient(f"oo-{kind}"))
    body = bundle(
        kind,
        entry("POST", "Patient", patient(f"oo-new-{kind}")),
        entry("DELETE", f"Patient/{existing}"),
    )

    results = send(client, body, Prefer="return=OperationOutcome").json()["entry"]

    created, deleted = sorted(results, key=lambda r: r["response"]["status"])
    pid = id_of(created, "Patient")
    issue = created["response"]["outcome"]["issue"][0]
    assert (issue["severity"], issue["code"]) == ("information", "informational")
    assert issue["diagnostics"] == f"Patient/{pid} created at version 1"
    said = deleted["response"]["outcome"]["issue"][0]["diagnostics"]
    assert said == f"deleted: Patient/{existing}"
    assert all("resource" not in r for r in results)


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_prefer_operation_outcome_tells_what_each_update_did(client: TestClient, kind: str) -> None:
    """An update says the version it made; one that changes nothing, or a conditional
    create that finds its match, says that nothing was written."""
    pid = created_id(client, patient(f"oo-up-{kind}"))
    same = {**patient(f"oo-up-{kind}"), "id": pid}
    body = bundle(
        kind,
        entry("PUT", f"Patient/{pid}", {**same, "active": True}),
        entry("POST", "Patient", patient(f"oo-new-{kind}")),
    )
    condition = f"identifier={SYSTEM}|oo-up-{kind}"
    unchanged = bundle("batch", entry("POST", "Patient", same, ifNoneExist=condition))

    updated = send(client, body, Prefer="return=OperationOutcome").json()["entry"][0]
    matched = send(client, unchanged, Prefer="return=OperationOutcome").json()["entry"][0]

    said = updated["response"]["outcome"]["issue"][0]["diagnostics"]
    assert said == f"Patient/{pid} updated to version 2"
    said = matched["response"]["outcome"]["issue"][0]["diagnostics"]
    assert said == f"Patient/{pid} left as it was at version 2"


def test_prefer_operation_outcome_does_not_call_a_missing_record_deleted(
    client: TestClient,
) -> None:
    """As a DELETE over REST says: a record that is not there was not deleted."""
    body = bundle(
        "batch",
        entry("DELETE", "Patient/nobody"),
        entry("DELETE", f"Patient?identifier={SYSTEM}|nobody"),
    )

    results = send(client, body, Prefer="return=OperationOutcome").json()["entry"]

    said = [r["response"]["outcome"]["issue"][0]["diagnostics"] for r in results]
    assert said == ["Patient/nobody did not exist or was already deleted", "no Patient matched"]


def test_prefer_minimal_gives_write_entries_nothing_but_their_status(
    client: TestClient,
) -> None:
    pid = created_id(client, patient("min"))
    body = bundle(
        "batch",
        entry("POST", "Patient", patient("min-new")),
        entry("PUT", f"Patient/{pid}", {**patient("min"), "id": pid, "active": True}),
        entry("DELETE", f"Patient/{pid}"),
    )

    results = send(client, body, Prefer="return=minimal").json()["entry"]

    assert [r["response"]["status"] for r in results] == ["201 Created", "200 OK", "204 No Content"]
    assert all("resource" not in r and "outcome" not in r["response"] for r in results)


# -- what the base refuses ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["collection", "document", "searchset", "history"])
def test_a_bundle_that_is_no_batch_or_transaction_is_400(
    client: TestClient, records: RecordStore, kind: str
) -> None:
    body = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"fullUrl": f"{BASE}/Patient/x", "resource": patient("c-1", id="x")}],
    }

    issue = assert_outcome(send(client, body), 400, repr(kind))
    assert issue["expression"] == ["Bundle.type"]
    assert records.storage.last_seq() == 0


def test_a_resource_that_is_no_bundle_is_400(client: TestClient, records: RecordStore) -> None:
    assert_outcome(send(client, patient("c-2")), 400, "batch", "transaction")
    assert records.storage.last_seq() == 0


def test_an_empty_transaction_answers_an_empty_response(client: TestClient) -> None:
    response = send(client, bundle("transaction"))

    assert response.status_code == 200
    assert response.json() == {"resourceType": "Bundle", "type": "transaction-response"}


def test_an_entry_without_request_is_400(client: TestClient, records: RecordStore) -> None:
    body = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient("c-3")}],
    }

    issue = assert_outcome(send(client, body), 400, "entry[0]")
    assert issue["expression"] == ["Bundle.entry[0].request"]
    assert records.storage.last_seq() == 0


def test_a_batch_refuses_entries_whose_url_rest_refuses(
    client: TestClient, records: RecordStore
) -> None:
    """DELETE Patient/x/_history/1 deleted Patient/x, DELETE Foo/1 answered 204, and a
    POST to Patient/x created another id: REST answers these 405 and 404."""
    existing = created_id(client, patient("h-0"))
    written = records.storage.last_seq()
    body = bundle(
        "batch",
        entry("DELETE", f"Patient/{existing}/_history/1"),
        entry("DELETE", "Foo/1"),
        entry("POST", f"Patient/{existing}", patient("h-1")),
    )

    response = send(client, body)

    assert response.status_code == 200, response.text
    results = [e["response"] for e in response.json()["entry"]]
    assert [r["status"][:3] for r in results] == ["405", "404", "405"]
    assert "it takes GET, HEAD" in results[0]["outcome"]["issue"][0]["diagnostics"]
    assert records.storage.last_seq() == written
    assert client.get(f"/fhir/Patient/{existing}").status_code == 200


def test_a_write_by_id_with_criteria_besides_is_refused_not_done_ignoring_them(
    client: TestClient, records: RecordStore
) -> None:
    """DELETE Patient/x?gender=male deleted Patient/x, whatever its gender."""
    existing = created_id(client, patient("q-0"))
    written = records.storage.last_seq()
    body = bundle(
        "batch",
        entry("DELETE", f"Patient/{existing}?gender=male"),
        entry("PUT", f"Patient/{existing}?gender=male", {**patient("q-0"), "id": existing}),
    )
    results = [e["response"] for e in send(client, body).json()["entry"]]
    assert [r["status"] for r in results] == ["400 Bad Request"] * 2
    said = results[0]["outcome"]["issue"][0]["diagnostics"]
    assert "give the id alone, or the criteria alone (DELETE Patient?...)" in said
    assert records.storage.last_seq() == written
    assert client.get(f"/fhir/Patient/{existing}").status_code == 200


def test_a_batch_refuses_history_and_search_urls_as_unsupported_not_as_ids(
    client: TestClient,
) -> None:
    """GET Patient/_history answered 404 'Patient/_history does not exist', and POST
    Patient/_search a 405 that took _search for an id."""
    body = bundle(
        "batch",
        entry("GET", "Patient/_history"),
        entry("GET", "_history"),
        entry("POST", "Patient/_search"),
        entry("GET", "Patient/$everything"),
    )

    results = [e["response"] for e in send(client, body).json()["entry"]]

    assert [r["status"] for r in results] == ["400 Bad Request"] * 4
    for result in results:
        assert "is not a supported interaction" in result["outcome"]["issue"][0]["diagnostics"]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_search_entry_answers_a_page_as_rest_does(
    client: TestClient, records: RecordStore, kind: str
) -> None:
    """A search entry handed out every match, whatever its _count: 10,000 patients in one
    entry's answer, and as many in each entry of a batch."""
    many = [entry("POST", "Patient", patient(f"pg-{i}", gender="male")) for i in range(51)]
    assert send(client, bundle("transaction", *many)).status_code == 200
    leaves = records.storage.leaf_count()

    response = send(
        client,
        bundle(
            kind,
            entry("GET", "Patient?gender=male&_count=2&_total=accurate"),
            entry("GET", "Patient?gender=male"),
        ),
    )

    assert response.status_code == 200, response.text
    pages = [e["resource"] for e in response.json()["entry"]]
    assert [len(page["entry"]) for page in pages] == [2, 50]
    assert all(any(link["relation"] == "next" for link in page["link"]) for page in pages)
    assert records.storage.leaf_count() - leaves == 52  # a leaf for each match shown
    assert pages[0]["total"] == 51  # asked for; the other's as over REST
    assert pages[1].get("total") == client.get("/fhir/Patient?gender=male").json().get("total")


def test_the_base_url_takes_a_bundle_as_written_with_or_without_a_slash(
    client: TestClient,
) -> None:
    """``POST [base]`` is the base itself: a client that does not follow redirects (curl,
    without -L) must not get a 307 to ``[base]/``."""
    for url in ("/fhir", "/fhir/"):
        body = bundle("batch", entry("POST", "Patient", patient(url)))
        response = client.post(url, json=body, headers=FHIR_JSON, follow_redirects=False)
        assert response.status_code == 200, (url, response.text)
        assert response.json()["type"] == "batch-response"
        refused = client.get(f"{url}?name=ana", follow_redirects=False)
        assert refused.status_code == 405, url
        assert refused.headers["allow"] == "POST"


def _shown(searchset: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [
        (e["search"]["mode"], e["fullUrl"], sorted(e["resource"]))
        for e in searchset.get("entry", [])
    ]


def test_a_search_entry_answers_as_the_same_search_over_rest(client: TestClient) -> None:
    """Result parameters were ignored in a Bundle (``_sort``, ``_include``, ``_elements``,
    ``_total``), and a search without criteria refused: each entry is the REST search."""
    people = [
        created_id(client, patient(f"s-{n}", birthDate=f"19{70 + n}-01-02")) for n in range(4)
    ]
    for person in people:
        client.post("/fhir/Observation", json=observation(f"Patient/{person}"), headers=FHIR_JSON)
    queries = (
        "Patient?_sort=-birthdate&_count=3",
        "Patient?_sort=birthdate&_count=2&_elements=birthDate",
        f"Observation?subject=Patient/{people[1]}&_include=Observation:subject",
        "Patient?_count=2",  # no criteria: every Patient, a page at a time
        "Patient?birthdate=ge1972&_total=none&_summary=true",
        "Patient?_summary=count",
    )
    body = bundle("batch", *(entry("GET", query) for query in queries))
    answers = send(client, body).json()["entry"]
    for query, answer in zip(queries, answers, strict=True):
        assert answer["response"]["status"] == "200 OK", (query, answer)
        searchset = answer["resource"]
        over_rest = client.get(f"/fhir/{query}").json()
        assert _shown(searchset) == _shown(over_rest), query
        assert searchset.get("total") == over_rest.get("total"), query
        relations = {link["relation"]: link["url"] for link in searchset["link"]}
        rest_relations = {link["relation"]: link["url"] for link in over_rest["link"]}
        assert relations.keys() == rest_relations.keys(), query
    next_page = {link["relation"]: link["url"] for link in answers[3]["resource"]["link"]}["next"]
    assert len(client.get(next_page.removeprefix("http://testserver")).json()["entry"]) == 2


def test_a_search_entry_s_unknown_parameter_is_reported_or_refused_as_over_rest(
    client: TestClient, records: RecordStore
) -> None:
    body = bundle("transaction", _valid_first(), entry("GET", "Patient?favourite=x"))
    refused = send(client, body, Prefer="handling=strict")
    assert refused.status_code == 400, refused.text
    assert_outcome(refused, 400, "'favourite'", "entry[1]")
    assert records.storage.last_seq() == 0
    answered = send(client, body)
    assert answered.status_code == 200, answered.text
    searchset = answered.json()["entry"][1]["resource"]
    outcome = searchset["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert "'favourite'" in outcome["resource"]["issue"][0]["diagnostics"]


def test_references_on_coffres_own_base_are_stored_relative(client: TestClient) -> None:
    """An absolute URL on this server's base is the relative reference (references.html):
    kept as written, it put the record in no compartment, so that a search by
    ``Patient/<id>``, ``$everything`` and the patient's own token missed it, erasure left it,
    and a clinician without a care relationship could write it."""
    pid = created_id(client, patient("own-base"))
    by_url = created_id(client, observation(f"{BASE}/Patient/{pid}"))
    sent = send(
        client,
        bundle(
            "transaction",
            entry("POST", "Patient", patient("new-one"), full_url=f"{BASE}/Patient/temporary"),
            entry("POST", "Observation", observation(f"{BASE}/Patient/temporary")),
            entry("POST", "Observation", observation(f"https://testserver/fhir/Patient/{pid}")),
        ),
    )
    assert sent.status_code == 200, sent.text
    created, first, second = sent.json()["entry"]
    new_pid = id_of(created, "Patient")
    read = [
        client.get(f"/fhir/Observation/{oid}").json()
        for oid in (by_url, id_of(second, "Observation"))
    ]
    assert [o["subject"]["reference"] for o in read] == [f"Patient/{pid}"] * 2
    after_fullurl = client.get(f"/fhir/Observation/{id_of(first, 'Observation')}").json()
    assert after_fullurl["subject"]["reference"] == f"Patient/{new_pid}"  # the fullUrl first
    found = client.get(f"/fhir/Observation?subject=Patient/{pid}").json()
    assert {e["resource"]["id"] for e in found["entry"]} == {by_url, id_of(second, "Observation")}


@pytest.mark.parametrize("reference", [" Patient/p", "/Patient/p", "Patient//p", "patient/p"])
def test_a_reference_that_only_looks_relative_is_refused(
    client: TestClient, reference: str
) -> None:
    assert_outcome(
        client.post("/fhir/Observation", json=observation(reference), headers=FHIR_JSON),
        422,
        "is no literal reference",
    )
    refused = send(
        client,
        bundle(
            "transaction",
            entry("POST", "Observation", observation("Patient/p")),
            entry("POST", "Observation", observation(reference)),
        ),
    )
    # The entry named: a Synthea transaction has hundreds (a conformance probe's finding).
    assert_outcome(refused, 422, "entry[1]: ", "is no literal reference")


# -- criteria and URLs read as REST reads them ---------------------------------------------


def test_criteria_whose_escapes_are_not_utf8_are_refused_everywhere(client: TestClient) -> None:
    """Decoded leniently, identifier=%E9 searched for a replacement character: a conditional
    create matched nothing and created a duplicate, a conditional delete deleted nothing."""
    created_id(client, patient("é"))
    header = client.post(
        "/fhir/Patient", json=patient("é"), headers={**FHIR_JSON, "If-None-Exist": "identifier=%E9"}
    )
    assert_outcome(header, 400, "not UTF-8", "%C3%A9")
    conditional = entry("POST", "Patient", patient("é"), ifNoneExist="identifier=%E9")
    assert_outcome(send(client, bundle("transaction", conditional)), 400, "entry[0]", "not UTF-8")
    answer = send(
        client,
        bundle(
            "batch", entry("GET", "Patient?identifier=%E9"), entry("DELETE", "Patient?name=%E9")
        ),
    )
    assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == ["400", "400"]
    assert total(client, "/fhir/Patient") == 1


def test_conditional_creates_escaped_differently_create_one_record(client: TestClient) -> None:
    """The same criteria, escaped or ordered otherwise, in two conditional creates and a
    conditional reference of one transaction: one patient, whom the reference names."""
    value = "tw-V"
    escaped = f"active=true&identifier={quote(SYSTEM, safe='')}%7C{value}"
    result = send(
        client,
        bundle(
            "transaction",
            entry(
                "POST",
                "Patient",
                patient(value, active=True),
                PATIENT_URN,
                ifNoneExist=f"identifier={SYSTEM}|{value}&active=true",
            ),
            entry("POST", "Patient", patient(value, active=True), ifNoneExist=escaped),
            entry("POST", "Observation", observation(f"Patient?{escaped}")),
        ),
    )
    assert result.status_code == 200, result.text
    locations = [e["response"]["location"] for e in result.json()["entry"]]
    assert locations[0] == locations[1]
    assert total(client, "/fhir/Patient") == 1
    observation_id = locations[2].split("/")[1]
    subject = client.get(f"/fhir/Observation/{observation_id}").json()["subject"]
    assert subject == {"reference": "/".join(locations[0].split("/")[:2])}


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("Patient/a_b", "not a valid FHIR id"),
        ("Patient/b1#frag", "not a valid FHIR id"),
        ("Patient/%ZZ", "not a valid FHIR id"),
        ("Patient//b1", "empty segment"),
        ("Patient/b1//_history/1", "empty segment"),
    ],
)
def test_an_entry_url_is_read_as_a_rest_url_is(client: TestClient, url: str, fragment: str) -> None:
    """A malformed id is a 400 as over REST (it was a 404 'does not exist'), and an empty
    segment is no segment dropped (Patient//b1 read Patient/b1)."""
    created = send(client, bundle("transaction", entry("PUT", "Patient/b1", patient("b", id="b1"))))
    assert created.status_code == 200, created.text
    answer = send(client, bundle("batch", entry("GET", url)))
    outcome = answer.json()["entry"][0]["response"]
    assert outcome["status"].startswith("400"), outcome
    assert fragment in outcome["outcome"]["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("full_url", "told"),
    [
        ("urn:uuid:notauuid", "is no urn:uuid:"),
        ("urn:oid:1.2.x", "is no urn:oid:"),
        (f"{BASE}/Patient/fu-1/_history/1", "names a version (bdl-8)"),
        (f"{BASE}/Patient/fu-2", "disagrees with the resource's id"),
        ("Patient/fu-2", "disagrees with the resource's id"),
    ],
)
def test_an_entry_s_full_url_is_what_r4_says(client: TestClient, full_url: str, told: str) -> None:
    """A fullUrl "SHALL NOT disagree with the id in the resource": one naming
    Patient/fu-2 beside a resource Patient/fu-1 re-pointed every reference to it."""
    body = bundle(
        "transaction",
        entry("PUT", "Patient/fu-1", patient("fu", id="fu-1"), full_url),
        entry("POST", "Observation", observation(full_url)),
    )
    assert_outcome(send(client, body), 400, "entry[0]", told)
    assert total(client, "/fhir/Patient/_history") == 0
    agreeing = bundle(
        "transaction",
        entry("PUT", "Patient/fu-1", patient("fu", id="fu-1"), f"{BASE}/Patient/fu-1"),
    )
    assert send(client, agreeing).status_code == 200
