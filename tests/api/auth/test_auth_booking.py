"""Booking under SMART tokens: a patient's app finds times and books for its patient
only; the seat it takes needs no right on Slots; a token without the scopes is a 403."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from smart import authority_at, client_for, register_app, register_user, user_token
from starlette.testclient import TestClient

from coffre.service import RecordStore

BOOKING_APP = "launch/patient patient/Slot.rs patient/Schedule.rs patient/Appointment.c"


def _open_campaign(records: RecordStore) -> None:
    """A centre's two seats at one time, and Anne's record."""
    with records.writer() as writer:
        writer.update("Patient", "anne", {"resourceType": "Patient", "id": "anne"})
        writer.update(
            "Schedule",
            "laval",
            {
                "resourceType": "Schedule",
                "id": "laval",
                "actor": [{"reference": "Location/centre-laval"}],
            },
        )
        for seat in ("a", "b"):
            slot = {
                "resourceType": "Slot",
                "id": seat,
                "schedule": {"reference": "Schedule/laval"},
                "status": "free",
                "start": "2031-03-01T09:00:00Z",
                "end": "2031-03-01T09:05:00Z",
            }
            writer.update("Slot", seat, slot)


@pytest.fixture
def patient_app(records: RecordStore, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    """A patient's booking app, and the headers of anne's token (her own context)."""
    _open_campaign(records)
    authority = authority_at(tmp_path)
    register_app(authority, "booking", BOOKING_APP)
    register_user(authority, "anne", "patient", "Patient/anne")
    client = client_for(records, authority)
    token = user_token(client, "booking", "anne", BOOKING_APP)["access_token"]
    return client, {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def _for(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "proposed",
        "slot": [{"reference": "Slot/a"}],
        "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}],
    }


def test_a_patient_finds_and_books_for_herself(
    patient_app: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = patient_app
    found = client.get("/fhir/Appointment/$find?start=2031-03-01", headers=headers)
    assert found.status_code == 200, found.text
    (entry,) = found.json()["entry"]
    # The centre's Schedule names no patient: her token sees it, and the place it offers.
    actors = [p["actor"]["reference"] for p in entry["resource"]["participant"]]
    assert actors == ["Location/centre-laval"]
    booked = client.post("/fhir/Appointment/$book", json=_for("anne"), headers=headers)
    assert booked.status_code == 201, booked.text
    again = client.post("/fhir/Appointment/$book", json=_for("anne"), headers=headers)
    assert again.status_code == 201, again.text  # the other seat of that time


def test_a_patient_books_for_nobody_else(
    patient_app: tuple[TestClient, dict[str, str]], records: RecordStore
) -> None:
    client, headers = patient_app
    response = client.post("/fhir/Appointment/$book", json=_for("bruno"), headers=headers)
    assert response.status_code == 403, response.text
    assert records.read("Slot", "a").resource()["status"] == "free"


def test_no_token_and_no_scope_are_refused(records: RecordStore, tmp_path: Path) -> None:
    _open_campaign(records)
    authority = authority_at(tmp_path)
    register_app(authority, "reader", "launch/patient patient/Appointment.rs")
    register_user(authority, "anne", "patient", "Patient/anne")
    client = client_for(records, authority)
    assert client.get("/fhir/Appointment/$find").status_code == 401
    token = user_token(client, "reader", "anne", "launch/patient patient/Appointment.rs")
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    found = client.get("/fhir/Appointment/$find", headers=headers)
    assert found.status_code == 403, found.text
    booked = client.post("/fhir/Appointment/$book", json=_for("anne"), headers=headers)
    assert booked.status_code == 403, booked.text
