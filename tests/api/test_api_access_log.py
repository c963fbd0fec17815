"""Every read, search and history page is in the log before its answer leaves."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FHIR_JSON
from pg import HostDatabase
from starlette.testclient import TestClient

from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore


def _leaves(records: RecordStore) -> list[Leaf]:
    return [Leaf.decode(data) for data in records.storage.leaves(0, records.storage.leaf_count())]


def _create(client: TestClient, family: str) -> str:
    response = client.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "name": [{"family": family}],
            "identifier": [{"system": "urn:t", "value": family}],
        },
        headers=FHIR_JSON,
    )
    assert response.status_code == 201
    return str(response.json()["id"])


def test_a_read_is_logged_with_what_it_handed_out(client: TestClient, records: RecordStore) -> None:
    patient_id = _create(client, "Côté")
    assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200
    leaf = _leaves(records)[-1]
    loc = records.keys.location("Patient", patient_id)
    sealed = records.storage.latest(loc)
    assert sealed is not None
    expected = Leaf(LeafKind.READ, loc, 1, hashlib.sha256(sealed.body).digest(), leaf.ts)
    assert leaf == expected._replace(event_hash=leaf.event_hash)
    assert leaf.event_hash in {event.digest for event in records.storage.events_of(sealed.comp)}


def test_a_search_logs_each_resource_it_returns(client: TestClient, records: RecordStore) -> None:
    ids = [_create(client, name) for name in ("Roy", "Roy-Bédard", "Nadeau")]
    before = records.storage.leaf_count()
    bundle = client.get("/fhir/Patient?identifier=urn:t|Roy,urn:t|Nadeau").json()
    assert bundle["total"] == 2
    logged = _leaves(records)[before:]
    assert [leaf.kind for leaf in logged] == [LeafKind.SEARCH, LeafKind.SEARCH]
    expected = {records.keys.location("Patient", pid) for pid in (ids[0], ids[2])}
    assert {leaf.loc for leaf in logged} == expected


@pytest.mark.parametrize("counting", ["_summary=count", "_count=0"])
def test_a_count_logs_each_record_it_counts(
    client: TestClient, records: RecordStore, counting: str
) -> None:
    """ "Has she a record of that code?" answered by a count alone, unlogged, would leave
    no trace of the look in her access history."""
    ids = [_create(client, name) for name in ("Roy", "Roy-Bédard", "Nadeau")]
    before = records.storage.leaf_count()
    bundle = client.get(f"/fhir/Patient?name=roy&{counting}").json()
    assert bundle["total"] == 2 and not bundle.get("entry")
    logged = _leaves(records)[before:]
    assert [leaf.kind for leaf in logged] == [LeafKind.SEARCH, LeafKind.SEARCH]
    assert {leaf.loc for leaf in logged} == {
        records.keys.location("Patient", pid) for pid in ids[:2]
    }
    before = records.storage.leaf_count()
    assert client.get(f"/fhir/Patient?name=lavoie&{counting}").json()["total"] == 0
    assert records.storage.leaf_count() == before


def _unchanging_writes(patient_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Writes that write nothing and answer with the record: a conditional create that
    finds it, a PUT of it as it is, an empty patch, a patch that only tests, and the same
    in a transaction Bundle."""
    patch = {"Content-Type": "application/json-patch+json"}
    found = {"If-None-Exist": f"identifier=urn:t|{body['name'][0]['family']}", **FHIR_JSON}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": body,
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": found["If-None-Exist"],
                },
            },
            {"resource": body, "request": {"method": "PUT", "url": f"Patient/{patient_id}"}},
        ],
    }
    return [
        {"method": "POST", "url": "/fhir/Patient", "json": body, "headers": found},
        {"method": "PUT", "url": f"/fhir/Patient/{patient_id}", "json": body, "headers": FHIR_JSON},
        {
            "method": "PATCH",
            "url": f"/fhir/Patient/{patient_id}",
            "content": "[]",
            "headers": patch,
        },
        {
            "method": "PATCH",
            "url": f"/fhir/Patient/{patient_id}",
            "content": json.dumps([{"op": "test", "path": "/id", "value": patient_id}]),
            "headers": {**patch, "Prefer": "return=minimal"},
        },
        {"method": "POST", "url": "/fhir", "json": bundle, "headers": FHIR_JSON},
    ]


def test_a_write_that_writes_nothing_is_logged_as_the_read_it_is(
    client: TestClient, records: RecordStore
) -> None:
    """It hands the record out (its body, or its id and version): without a leaf, whoever
    may write would read any record, or find a patient by identifier, unseen."""
    patient_id = _create(client, "Lavoie")
    body = client.get(f"/fhir/Patient/{patient_id}").json()
    loc = records.keys.location("Patient", patient_id)
    for request in _unchanging_writes(patient_id, body):
        before = records.storage.leaf_count()
        response = client.request(**request)
        assert response.status_code == 200, (request, response.text)
        logged = _leaves(records)[before:]
        entries = len(request["json"]["entry"]) if request["url"] == "/fhir" else 1
        assert [(leaf.kind, leaf.loc, leaf.version) for leaf in logged] == [
            (LeafKind.READ, loc, 1)
        ] * entries, request
    assert records.read("Patient", patient_id).version == 1


def test_a_history_page_logs_its_versions(client: TestClient, records: RecordStore) -> None:
    patient_id = _create(client, "Gagné")
    client.put(
        f"/fhir/Patient/{patient_id}",
        json={"resourceType": "Patient", "id": patient_id, "gender": "male"},
        headers=FHIR_JSON,
    )
    before = records.storage.leaf_count()
    assert client.get(f"/fhir/Patient/{patient_id}/_history").json()["total"] == 2
    logged = _leaves(records)[before:]
    assert sorted((leaf.kind, leaf.version) for leaf in logged) == [
        (LeafKind.HISTORY, 1),
        (LeafKind.HISTORY, 2),
    ]


def test_a_refused_read_logs_nothing(client: TestClient, records: RecordStore) -> None:
    before = records.storage.leaf_count()
    assert client.get("/fhir/Patient/absent").status_code == 404
    assert records.storage.leaf_count() == before


def test_a_not_modified_read_is_logged_as_a_read(client: TestClient, records: RecordStore) -> None:
    """A 304 tells the client that what it holds is the record as it stands: an access
    to it, which the patient's access history must show as any other read."""
    patient_id = _create(client, "Lévesque")
    loc = records.keys.location("Patient", patient_id)
    url = f"/fhir/Patient/{patient_id}"
    last_modified = client.get(url).headers["last-modified"]
    for header in ({"If-None-Match": 'W/"1"'}, {"If-Modified-Since": last_modified}):
        before = records.storage.leaf_count()
        assert client.get(url, headers=header).status_code == 304
        logged = _leaves(records)[before:]
        assert [(leaf.kind, leaf.loc, leaf.version) for leaf in logged] == [
            (LeafKind.READ, loc, 1)
        ], header


def test_the_checkpoint_covers_the_reads(client: TestClient, records: RecordStore) -> None:
    patient_id = _create(client, "Poirier")
    client.get(f"/fhir/Patient/{patient_id}")
    checkpoint = records.ledger.latest(records.storage)
    assert checkpoint is not None and checkpoint.size == records.storage.leaf_count()


def test_a_patient_s_access_history_lists_who_did_what_newest_first(client: TestClient) -> None:
    patient_id = _create(client, "Bouchard")
    assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200
    response = client.get(f"/fhir/Patient/{patient_id}/$access-history")
    assert response.status_code == 200, response.text
    events = [entry["resource"] for entry in response.json()["entry"]]
    assert [event["action"] for event in events] == ["R", "C"]
    assert all(event["agent"][0]["network"]["address"] == "testclient" for event in events)
    assert events[0]["entity"] == [{"what": {"reference": f"Patient/{patient_id}/_history/1"}}]
    again = client.get(f"/fhir/Patient/{patient_id}/$access-history").json()
    assert [entry["resource"]["action"] for entry in again["entry"]] == ["R", "R", "C"]


def test_a_patient_s_access_history_lists_the_task_written_for_them(client: TestClient) -> None:
    """A Task for the patient alone is sealed in their compartment, and so are the
    AuditEvents of its writes and reads."""
    patient_id = _create(client, "Lavoie")
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{patient_id}"},
    }
    created = client.post("/fhir/Task", json=task, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert client.get(f"/fhir/Task/{task_id}").status_code == 200
    response = client.get(f"/fhir/Patient/{patient_id}/$access-history").json()
    entities = [e["resource"]["entity"][0]["what"]["reference"] for e in response["entry"]]
    assert entities[:2] == [f"Task/{task_id}/_history/1"] * 2


def test_a_deleted_patient_s_access_history_still_lists_who_opened_their_records(
    client: TestClient,
) -> None:
    """Deleting the Patient (not erasing it) keeps their other records readable: it
    used to make their access history a 410, so who then read those was listed nowhere."""
    patient_id = _create(client, "Pelletier")
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "poids"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    created = client.post("/fhir/Observation", json=observation, headers=FHIR_JSON)
    assert client.delete(f"/fhir/Patient/{patient_id}").status_code in (200, 204)
    assert client.get(f"/fhir/Observation/{created.json()['id']}").status_code == 200
    response = client.get(f"/fhir/Patient/{patient_id}/$access-history")
    assert response.status_code == 200, response.text
    events = [entry["resource"] for entry in response.json()["entry"]]
    assert [event["action"] for event in events[:3]] == ["R", "D", "C"]


def test_the_access_history_of_an_unknown_patient_is_404(client: TestClient) -> None:
    response = client.get("/fhir/Patient/nobody/$access-history")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_the_access_history_refuses_parameters_it_would_ignore(
    client: TestClient, records: RecordStore
) -> None:
    """A _since or a criterion would be ignored, handing out more than the client asked
    for; refused before anything is logged."""
    patient_id = _create(client, "Gagnon")
    logged = records.storage.leaf_count()
    for query in (
        "_count=abc",
        "_since=2020-01-01T00:00:00Z",
        "x=1",
        "_count=1&_count=2",
        "_snapshot=99999999999",  # past the log's end: later pages would shift
    ):
        response = client.get(f"/fhir/Patient/{patient_id}/$access-history?{query}")
        assert response.status_code == 400, (query, response.text)
        diagnostics = response.json()["issue"][0]["diagnostics"]
        assert query.split("=")[0] in diagnostics, diagnostics
    assert records.storage.leaf_count() == logged
    answer = client.get(f"/fhir/Patient/{patient_id}/$access-history?_format=json")
    assert answer.status_code == 200, answer.text


def _pages(client: TestClient, url: str) -> Iterator[dict[str, Any]]:
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        yield page
        next_url = next((k["url"] for k in page["link"] if k["relation"] == "next"), None)


def test_a_long_access_history_comes_in_pages_that_stay_put(client: TestClient) -> None:
    """A patient followed for years is opened thousands of times: the history comes a
    page at a time, and pages read while others open the record list the history as it
    was at the first page, each event once."""
    patient_id = _create(client, "Pelletier")
    for _ in range(6):
        assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200
    url = f"/fhir/Patient/{patient_id}/$access-history"
    pages = []
    for page in _pages(client, f"{url}?_count=3"):
        pages.append(page)
        assert client.get(f"/fhir/Patient/{patient_id}").status_code == 200  # meanwhile
    assert [len(page["entry"]) for page in pages] == [3, 3, 1]
    assert {page["total"] for page in pages} == {7}  # the create and 6 reads
    paged = [entry["resource"] for page in pages for entry in page["entry"]]
    assert [event["action"] for event in paged] == ["R"] * 6 + ["C"]
    first = next(k["url"] for k in pages[0]["link"] if k["relation"] == "self")
    whole = client.get(first.replace("_count=3", "_count=100")).json()
    assert whole["type"] == "searchset"
    assert [entry["resource"] for entry in whole["entry"]] == paged
    newest = client.get(f"{url}?_count=1").json()
    assert newest["total"] > 7 and len(newest["entry"]) == 1
    assert client.get(f"{url}?_snapshot=0").json()["total"] == 0  # as a search's: pinned


def test_a_read_refused_for_integrity_is_itself_in_the_log(
    client: TestClient, records: RecordStore
) -> None:
    """The client gets no data, and the log says a read of that record was refused."""
    patient_id = _create(client, "Fortin")
    loc = records.keys.location("Patient", patient_id)
    with HostDatabase.of(records.storage) as db:
        (body,) = db.execute("SELECT body FROM versions WHERE loc = ?", (loc,)).fetchone()
        flipped = bytes([body[0] ^ 1]) + body[1:]
        db.execute("UPDATE versions SET body = ? WHERE loc = ?", (flipped, loc))
    response = client.get(f"/fhir/Patient/{patient_id}")
    assert response.status_code == 500
    assert "Fortin" not in response.text
    leaf = _leaves(records)[-1]
    assert (leaf.kind, leaf.loc) == (LeafKind.INTEGRITY, loc)
    gateway = records.storage.events_of(records.keys.shared_compartment("AuditEvent"))
    assert leaf.event_hash in [event.digest for event in gateway]  # beside the data keys' events
