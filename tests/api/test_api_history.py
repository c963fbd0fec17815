"""A record's history ``_at`` a period: the versions that were current at some point of it
(R4 http.html#history), each from its own time to the next version's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from conftest import FHIR_JSON, put_resource
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from coffre.api.history import current_during
from coffre.service.stored import Stored


def _versions(client: TestClient) -> list[str]:
    """Three versions of Patient/h (created, updated, deleted): their lastUpdated, as a
    URL carries them."""
    times = []
    for gender in ("female", "other"):
        put_resource(client, {"resourceType": "Patient", "id": "h", "gender": gender})
        times.append(client.get("/fhir/Patient/h").json()["meta"]["lastUpdated"])
    assert client.delete("/fhir/Patient/h").status_code in (200, 204)
    history = client.get("/fhir/Patient/h/_history").json()
    times.append(history["entry"][0]["response"]["lastModified"])
    return [quote(time) for time in times]


def _at(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/fhir/Patient/h/_history?{query}", headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["total"] == len(bundle.get("entry", []))
    return [entry["response"]["etag"] for entry in bundle.get("entry", [])]


def test_at_an_instant_the_version_then_current(client: TestClient) -> None:
    first, second, deleted = _versions(client)
    assert _at(client, f"_at={first}") == ['W/"1"']
    assert _at(client, f"_at={second}") == ['W/"2"']
    assert _at(client, f"_at={deleted}") == ['W/"3"']  # the deletion, current since


def test_at_a_period_every_version_current_during_it(client: TestClient) -> None:
    _versions(client)
    year = datetime.now(UTC).year
    assert _at(client, f"_at={year}") == ['W/"3"', 'W/"2"', 'W/"1"']
    assert _at(client, "_at=2000-01-01") == []
    assert _at(client, f"_at={year + 1}") == ['W/"3"']


def test_at_with_since_and_pages(client: TestClient) -> None:
    first, second, _ = _versions(client)
    year = datetime.now(UTC).year
    assert _at(client, f"_at={first}&_since={second}") == []
    assert _at(client, f"_at={year}&_since={second}") == ['W/"3"', 'W/"2"']
    page = client.get(f"/fhir/Patient/h/_history?_at={year}&_count=2").json()
    assert page["total"] == 3 and len(page["entry"]) == 2
    later = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert "_at=" in later
    assert [e["response"]["etag"] for e in client.get(later).json()["entry"]] == ['W/"1"']


def test_at_is_refused_where_it_cannot_be_answered(client: TestClient) -> None:
    _versions(client)
    for url, words in (
        ("/fhir/Patient/_history?_at=2024", "one record's history"),
        ("/fhir/_history?_at=2024", "one record's history"),
        ("/fhir/Patient/h/_history?_at=ge2024", "without a prefix"),
        ("/fhir/Patient/h/_history?_at=eq2024", "without a prefix"),
        ("/fhir/Patient/h/_history?_at=yesterday", "not a FHIR date"),
        ("/fhir/Patient/h/_history?_at=2024&_at=2025", "_at"),
    ):
        response = client.get(url)
        assert response.status_code == 400, (url, response.text)
        assert words in response.json()["issue"][0]["diagnostics"], url


@given(
    gaps=st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
    moment=st.integers(0, 10**7),
)
def test_at_each_moment_after_the_creation_one_version_is_current(
    gaps: list[int], moment: int
) -> None:
    starts = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    versions = [Stored("Patient", "h", i + 1, ts, False, b"{}") for i, ts in enumerate(starts)]
    current = current_during(versions, moment, moment + 1)
    assert len(current) == (1 if moment >= starts[0] else 0)
    every = current_during(versions, 0, moment + 1)
    assert [v.version for v in every] == [v.version for v in versions if v.ts <= moment]
