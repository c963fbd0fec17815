"""The first-access notice, end to end: a clinician's read through the API writes it once
per (practitioner, patient), break-glass says so, and the outbound hook never holds up
or fails the read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from minted import bearer
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api import notices as api_notices
from coffre.api.auth import Authority
from coffre.service import RecordStore
from coffre.service.notices import Notice, notice_id

DOCTOR = "Practitioner/dr-roy"


@pytest.fixture
def setup(records: RecordStore) -> Iterator[tuple[TestClient, Authority]]:
    with records.writer() as writer:
        for patient in ("p1", "p2"):
            writer.update("Patient", patient, {"resourceType": "Patient", "id": patient})
        writer.create(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": "Patient/p1"},
                "participant": [{"individual": {"reference": DOCTOR}}],
            }
        )
    authority = Authority.ephemeral()
    with TestClient(create_app(records, authority=authority), raise_server_exceptions=False) as c:
        yield c, authority


def _notices(records: RecordStore, patient: str) -> list[dict[str, object]]:
    found = records.storage.latest(
        records.keys.location("Communication", notice_id(records, DOCTOR, patient))
    )
    if found is None:
        return []
    return [records.read("Communication", notice_id(records, DOCTOR, patient)).resource()]


def test_a_clinicians_first_read_tells_the_patient_once(
    setup: tuple[TestClient, Authority], records: RecordStore
) -> None:
    client, authority = setup
    doctor = bearer(authority, "clinician", DOCTOR, "user/*.rs")
    assert client.get("/fhir/Patient/p1", headers=doctor).status_code == 200
    [notice] = _notices(records, "p1")
    assert notice["sender"] == {"reference": DOCTOR} and notice["priority"] == "routine"
    before = records.storage.leaf_count()
    assert client.get("/fhir/Patient/p1", headers=doctor).status_code == 200
    assert records.storage.leaf_count() == before + 1  # the read's leaf, and no write


def test_break_glass_is_noticed_as_such(
    setup: tuple[TestClient, Authority], records: RecordStore
) -> None:
    client, authority = setup
    doctor = {**bearer(authority, "clinician", DOCTOR, "user/*.rs"), "X-Break-Glass": "urgence"}
    assert client.get("/fhir/Patient/p2", headers=doctor).status_code == 200
    [notice] = _notices(records, "p2")
    assert notice["priority"] == "urgent"


def test_nobody_but_a_professional_makes_a_notice(
    setup: tuple[TestClient, Authority], records: RecordStore
) -> None:
    client, authority = setup
    patient = bearer(authority, "patient", "Patient/p1", "user/*.rs")
    assert client.get("/fhir/Patient/p1", headers=patient).status_code == 200
    assert client.get("/fhir/Patient/p1").status_code == 200
    assert _notices(records, "p1") == []


def test_the_outbound_hook_gets_the_notice_and_a_failing_one_fails_nothing(
    setup: tuple[TestClient, Authority],
    records: RecordStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, authority = setup
    posted: list[tuple[str, Notice]] = []

    async def post(url: str, notice: Notice) -> bool:
        posted.append((url, notice))
        raise OSError("the gateway is down")

    monkeypatch.setattr(api_notices, "post_notice_hook", post)
    monkeypatch.setenv("COFFRE_NOTICE_WEBHOOK", "https://sms.example/hook")
    doctor = bearer(authority, "clinician", DOCTOR, "user/*.rs")
    assert client.get("/fhir/Patient/p1", headers=doctor).status_code == 200
    expected = Notice(f"Communication/{notice_id(records, DOCTOR, 'p1')}")
    assert posted == [("https://sms.example/hook", expected)]
