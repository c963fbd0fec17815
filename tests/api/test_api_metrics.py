"""The server's figures: they parse as the Prometheus text format, move as requests are
answered and commits fail, and their labels come from a fixed set whatever a client puts
in its URL. (Several processes added up: test_api_workers.py; who may scrape:
test_api_scraping.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import FHIR_JSON
from pg import HostDatabase
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from coffre.api.admission import ComeBack, WaitingRoom
from coffre.api.metrics import COMMIT_CAUSES, INTERACTIONS, RoomMetrics, interaction_of
from coffre.service import RecordStore
from coffre.storage import SqliteStorage

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of a scrape, by name and labels."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return samples_of(response.text)


def samples_of(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _answered(before: Samples, after: Samples, interaction: str, code: str) -> float:
    name = "coffre_http_requests_total"
    return value(after, name, interaction=interaction, code=code) - value(
        before, name, interaction=interaction, code=code
    )


def _create(client: TestClient) -> str:
    patient = {"resourceType": "Patient", "name": [{"family": "Côté"}]}
    created = client.post("/fhir/Patient", json=patient, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_counts_move_as_requests_are_answered(client: TestClient, records: RecordStore) -> None:
    before = scrape(client)
    patient_id = _create(client)
    url = f"/fhir/Patient/{patient_id}"
    assert client.get(url).status_code == 200
    assert client.get(f"{url}/_history/1").status_code == 200
    assert client.get(f"{url}/_history").status_code == 200
    assert client.get("/fhir/Patient?family=C%C3%B4t%C3%A9").status_code == 200
    assert client.get("/fhir/Patient/nobody-here").status_code == 404
    assert client.get("/fhir/metadata").status_code == 200
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind}
        assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    after = scrape(client)
    expected = [
        ("create", "201"),
        ("read", "200"),
        ("vread", "200"),
        ("history", "200"),
        ("search", "200"),
        ("read", "404"),
        ("capabilities", "200"),
        ("transaction", "200"),
        ("batch", "200"),
    ]
    assert [_answered(before, after, *labels) for labels in expected] == [1.0] * len(expected)
    durations = "coffre_http_request_duration_seconds_count"
    assert (
        value(after, durations, interaction="read") - value(before, durations, interaction="read")
        == 2
    )
    assert value(after, "coffre_commit_requests_count") > value(
        before, "coffre_commit_requests_count"
    )
    assert value(after, "coffre_ledger_leaves") == records.storage.leaf_count()
    newest = records.latest_writes.newest_leaf / 1_000_000
    assert value(after, "coffre_ledger_checkpoint_timestamp_seconds") == newest
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_a_scrape_logs_no_access(client: TestClient, records: RecordStore) -> None:
    _create(client)
    leaves = records.storage.leaf_count()
    scrape(client)
    assert records.storage.leaf_count() == leaves


HOSTILE = [
    ("GET", "/fhir/Patient/Tremblay-%C3%89lise-1985-02-03"),
    ("GET", "/fhir/Patient?name=Tremblay&identifier=TREE85520318"),
    ("GET", "/fhir/Zz%22%7D%0Aevil%7B/123"),
    ("GET", "/fhir/Patient/x/$steal-everything"),
    ("GET", "/fhir/Patient/x/_history/1/more/and/more"),
    ("POST", "/fhir/Observation/_search/again"),
    ("PATCH", "/fhir/Patient/TREE85520318"),
    ("OPTIONS", "/fhir/Patient"),
    ("PROPFIND", "/fhir"),
    ("GET", "/../../etc/passwd"),
    ("GET", "/wp-admin/TREE85520318.php"),
    ("GET", "/" + "a" * 5000),
    ("GET", "/fhir/" + "/".join(f"seg{n}" for n in range(50))),
    ("DELETE", "/portal/TREE85520318"),
    ("GET", "/ledger/tile/TREE85520318"),
    ("GET", "/metrics/TREE85520318"),
]


def test_hostile_urls_add_no_label_values(client: TestClient) -> None:
    for method, url in HOSTILE:
        client.request(method, url)
    labels = {
        (name, value)
        for (_, sample_labels) in scrape(client)
        for name, value in sample_labels
        if name in ("interaction", "code")
    }
    interactions = {value for name, value in labels if name == "interaction"}
    codes = {value for name, value in labels if name == "code"}
    assert interactions <= set(INTERACTIONS)
    assert all(code.isdigit() and len(code) == 3 for code in codes)


@pytest.mark.parametrize(
    ("method", "path", "interaction"),
    [
        ("GET", "/fhir/Patient/123", "read"),
        ("HEAD", "/fhir/Patient/123", "read"),
        ("PUT", "/fhir/Patient/123", "update"),
        ("PATCH", "/fhir/Patient/123", "patch"),
        ("DELETE", "/fhir/Patient/123", "delete"),
        ("GET", "/fhir/Patient/123/_history/2", "vread"),
        ("GET", "/fhir/Patient/123/_history", "history"),
        ("GET", "/fhir/Patient/_history", "history"),
        ("GET", "/fhir/_history", "history"),
        ("GET", "/fhir/Patient", "search"),
        ("POST", "/fhir/Patient/_search", "search"),
        ("POST", "/fhir/Patient", "create"),
        ("PUT", "/fhir/Patient", "update"),
        ("PATCH", "/fhir/Patient", "patch"),
        ("DELETE", "/fhir/Patient", "delete"),
        ("POST", "/fhir", "bundle"),
        ("POST", "/fhir/", "bundle"),
        ("GET", "/fhir/metadata", "capabilities"),
        ("GET", "/fhir/.well-known/smart-configuration", "capabilities"),
        ("GET", "/fhir/Patient/123/$everything", "operation"),
        ("GET", "/fhir/Patient/123/$access-history", "operation"),
        ("GET", "/fhir/Appointment/$find", "booking"),
        ("POST", "/fhir/Appointment/$book", "booking"),
        ("GET", "/fhir/$export", "export"),
        ("GET", "/fhir/Group/g/$export", "export"),
        ("GET", "/fhir/$export-file/job/Patient", "export"),
        ("POST", "/auth/token", "auth"),
        ("GET", "/ledger/checkpoint", "ledger"),
        ("GET", "/portal/", "portal"),
        ("GET", "/research/projects", "research"),
        ("GET", "/health/ready", "health"),
        ("GET", "/metrics", "metrics"),
        ("OPTIONS", "/fhir/Patient/123", "other"),
        ("GET", "/", "other"),
        ("GET", "/fhirx/Patient", "other"),
    ],
)
def test_an_interaction_is_named_from_the_method_and_the_shape_of_the_path(
    method: str, path: str, interaction: str
) -> None:
    assert interaction_of(method, path) == interaction


def test_a_commit_that_fails_is_counted_by_its_cause(
    client: TestClient, records: RecordStore
) -> None:
    storage = records.storage
    if not isinstance(storage, SqliteStorage):
        pytest.skip("SQLite's page limit stands in for a full disk; PostgreSQL has none")
    before = scrape(client)
    pages = storage._write_db.execute("PRAGMA page_count").fetchone()[0]
    storage._write_db.execute(f"PRAGMA max_page_count = {pages}")
    big = {"resourceType": "Patient", "name": [{"text": "Côté " * 40_000}]}
    assert client.post("/fhir/Patient", json=big, headers=FHIR_JSON).status_code == 503
    after = scrape(client)
    failed = "coffre_commits_failed_total"
    assert value(after, failed, cause="disk_full") - value(before, failed, cause="disk_full") == 1
    assert {
        cause
        for cause in COMMIT_CAUSES
        if value(after, failed, cause=cause) != value(before, failed, cause=cause)
    } == {"disk_full"}


def test_an_integrity_failure_is_counted(client: TestClient, records: RecordStore) -> None:
    patient_id = _create(client)
    loc = records.keys.location("Patient", patient_id)
    with HostDatabase.of(records.storage) as db:
        (body,) = db.execute("SELECT body FROM versions WHERE loc = ?", (loc,)).fetchone()
        db.execute("UPDATE versions SET body = ? WHERE loc = ?", (bytes(body)[::-1], loc))
    before = scrape(client)
    assert client.get(f"/fhir/Patient/{patient_id}").status_code == 500
    after = scrape(client)
    failures = "coffre_integrity_failures_total"
    assert value(after, failures, check="record") - value(before, failures, check="record") == 1


def test_the_waiting_room_is_seen_as_it_fills_and_turns_away() -> None:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    async def run() -> None:
        room = WaitingRoom(serving=1, waiting=1, observer=RoomMetrics())
        hold, turned = asyncio.Event(), sample("coffre_booking_turned_away_total")

        async def visit() -> None:
            async with room.turn():
                await hold.wait()

        visits = [asyncio.create_task(visit()) for _ in range(2)]
        await asyncio.sleep(0)
        assert sample("coffre_booking_serving_requests") == 1
        assert sample("coffre_booking_waiting_requests") == 1
        with pytest.raises(ComeBack):
            await visit()
        assert sample("coffre_booking_turned_away_total") == turned + 1
        hold.set()
        await asyncio.gather(*visits)
        assert sample("coffre_booking_serving_requests") == 0
        assert sample("coffre_booking_waiting_requests") == 0

    asyncio.run(run())


def test_every_figure_is_documented(client: TestClient) -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    families = {
        family.name
        for family in text_string_to_metric_families(client.get("/metrics").text)
        if family.name.startswith("coffre_")
    }
    assert families and not [name for name in families if f"`{name}" not in operations]
