"""Booking under SMART tokens: a patient's app finds times and books for its patient
only; the seat it takes needs no right on Slots; a token without the scopes is a 403."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from smart import (
    FHIR_BASE,
    ORIGIN,
    authority_at,
    client_for,
    register_app,
    register_user,
    user_token,
)
from starlette.testclient import TestClient

from coffre.service import RecordStore

BOOKING_APP = "launch/patient patient/Slot.rs patient/Schedule.rs patient/Appointment.c"
RECORD_APP = "launch/patient patient/*.rs patient/Appointment.cu"
VACCINATION = {"coding": [{"system": "http://snomed.info/sct", "code": "33879002"}]}


def _open_campaign(records: RecordStore) -> None:
    """A centre's two seats at one time, two vaccination seats at another, and Anne's and
    Bruno's records."""
    with records.writer() as writer:
        for patient in ("anne", "bruno"):
            writer.update("Patient", patient, {"resourceType": "Patient", "id": patient})
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
            vaccination = {**slot, "id": f"v{seat}", "serviceType": [VACCINATION]}
            vaccination.update(start="2031-03-02T09:00:00Z", end="2031-03-02T09:05:00Z")
            writer.update("Slot", f"v{seat}", vaccination)


def _anne_with(
    records: RecordStore, folder: Path, scopes: str
) -> tuple[TestClient, dict[str, str]]:
    """A patient's app, and the headers of anne's token (her own context)."""
    _open_campaign(records)
    authority = authority_at(folder)
    register_app(authority, "booking", scopes)
    register_user(authority, "anne", "patient", "Patient/anne")
    client = client_for(records, authority)
    token = user_token(client, "booking", "anne", scopes)["access_token"]
    return client, {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


@pytest.fixture
def patient_app(records: RecordStore, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    """A patient's booking app."""
    return _anne_with(records, tmp_path, BOOKING_APP)


@pytest.fixture
def record_app(records: RecordStore, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    """A patient's app that reads her record and writes her appointments."""
    return _anne_with(records, tmp_path, RECORD_APP)


def _for(patient: str, *slots: str, status: str = "proposed") -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": status,
        "slot": [{"reference": f"Slot/{slot}"} for slot in slots or ("a",)],
        "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}],
    }


def _slot_status(records: RecordStore, slot_id: str) -> str:
    status: str = records.read("Slot", slot_id).resource()["status"]
    return status


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


def test_a_patient_takes_no_seat_but_through_book(
    record_app: tuple[TestClient, dict[str, str]], records: RecordStore
) -> None:
    """Her REST writes would take seats around $book's rules (a seat not yet opened, a
    closed one, a past one, forty at once): they take none; cancelling stays hers."""
    client, headers = record_app
    for slots in (("a",), ("not-yet-opened",), ("a", "b")):
        made = client.post(
            "/fhir/Appointment", json=_for("anne", *slots, status="booked"), headers=headers
        )
        assert made.status_code == 403, made.text
        assert "Appointment/$book" in made.json()["issue"][0]["diagnostics"]
    proposed = client.post("/fhir/Appointment", json=_for("anne"), headers=headers)
    assert proposed.status_code == 201, proposed.text  # a proposal holds nothing
    booked = {**proposed.json(), "status": "booked"}
    taking = client.put(f"/fhir/Appointment/{booked['id']}", json=booked, headers=headers)
    assert taking.status_code == 403, taking.text
    assert _slot_status(records, "a") == "free"
    made = client.post("/fhir/Appointment/$book", json=_for("anne"), headers=headers).json()
    cancelled = {**made, "status": "cancelled"}
    let_go = client.put(f"/fhir/Appointment/{made['id']}", json=cancelled, headers=headers)
    assert let_go.status_code == 200, let_go.text
    assert _slot_status(records, made["slot"][0]["reference"].removeprefix("Slot/")) == "free"


def test_a_patient_books_one_seat_and_one_vaccination_to_come(
    patient_app: tuple[TestClient, dict[str, str]], records: RecordStore
) -> None:
    """Else her app takes a time's every seat in one request, or in one each."""
    client, headers = patient_app
    both = client.post("/fhir/Appointment/$book", json=_for("anne", "va", "vb"), headers=headers)
    assert both.status_code == 422, both.text
    assert "one seat" in both.json()["issue"][0]["diagnostics"]
    assert (_slot_status(records, "va"), _slot_status(records, "vb")) == ("free", "free")


def test_a_patient_holds_one_vaccination_to_come_of_hers_alone(
    patient_app: tuple[TestClient, dict[str, str]], records: RecordStore
) -> None:
    """As the portal's rule, counting what the portal lists as hers: not a clinician's
    appointment of her and Bruno's, which she neither sees nor cancels."""
    client, headers = patient_app
    with records.writer() as writer:  # a clinician's appointment of hers and Bruno's
        shared = _for("anne", "a", status="booked")
        bruno = {"actor": {"reference": "Patient/bruno"}, "status": "accepted"}
        shared["participant"].append(bruno)
        shared["serviceType"] = [VACCINATION]
        writer.create(shared)
    first = client.post("/fhir/Appointment/$book", json=_for("anne", "va"), headers=headers)
    assert first.status_code == 201, first.text
    second = client.post("/fhir/Appointment/$book", json=_for("anne", "vb"), headers=headers)
    assert second.status_code == 409, second.text
    said = second.json()["issue"][0]["diagnostics"]
    assert f"Appointment/{first.json()['id']}" in said and "cancel it" in said
    assert _slot_status(records, "vb") == "free"


def test_a_token_confined_to_a_patient_books_as_she_does_whatever_its_role(
    records: RecordStore, tmp_path: Path
) -> None:
    """An OpenID Connect issuer's SMART patient app: a patient claim and patient scopes,
    no role nor fhirUser. Confined to her records, it is held to her booking rules."""
    _open_campaign(records)
    authority = authority_at(tmp_path)
    client = client_for(records, authority)
    claims = {"iss": ORIGIN + "/auth", "aud": FHIR_BASE, "sub": "anne-at-her-issuer"}
    claims.update(client_id="app", scope=RECORD_APP + " patient/Schedule.rs", patient="anne")
    token = authority.signer.sign(claims, 300)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    rest = _for("anne", "va", "vb", status="booked")
    made = client.post("/fhir/Appointment", json=rest, headers=headers)
    assert made.status_code == 403, made.text
    both = client.post("/fhir/Appointment/$book", json=_for("anne", "va", "vb"), headers=headers)
    assert both.status_code == 422, both.text
    first = client.post("/fhir/Appointment/$book", json=_for("anne", "va"), headers=headers)
    assert first.status_code == 201, first.text
    second = client.post("/fhir/Appointment/$book", json=_for("anne", "vb"), headers=headers)
    assert second.status_code == 409, second.text
    assert _slot_status(records, "vb") == "free"


def _booked_va(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    first = client.post("/fhir/Appointment/$book", json=_for("anne", "va"), headers=headers)
    assert first.status_code == 201, first.text
    booked: dict[str, Any] = first.json()
    return booked


def test_a_patient_changes_nothing_her_appointment_was_booked_with(
    record_app: tuple[TestClient, dict[str, str]], records: RecordStore
) -> None:
    """Moved into the past, her seat still held, it would no longer count as to come and
    she would book another vaccination, again and again; with another service, it would
    be no vaccination. She cancels it, and may note something on it."""
    client, headers = record_app
    booked = _booked_va(client, headers)
    url = f"/fhir/Appointment/{booked['id']}"
    sister = {"actor": {"display": "my sister"}, "status": "accepted"}
    changes: list[dict[str, Any]] = [
        {"start": "2020-01-01T09:00:00Z", "end": "2020-01-01T09:05:00Z"},
        {"participant": [*booked["participant"], sister]},
        {"serviceType": [{"text": "a chat"}]},
        {"status": "noshow"},
        {"status": "arrived"},
    ]
    for change in changes:
        refused = client.put(url, json={**booked, **change}, headers=headers)
        assert refused.status_code == 403, (change, refused.text)
        assert "cancel it" in refused.json()["issue"][0]["diagnostics"]
    patch = [{"op": "replace", "path": "/start", "value": "2020-01-01T09:00:00Z"}]
    patch_headers = {**headers, "Content-Type": "application/json-patch+json"}
    patched = client.patch(url, json=patch, headers=patch_headers)
    assert patched.status_code == 403, patched.text
    entry = {"resource": {**booked, **changes[0]}, "request": {"method": "PUT", "url": url[6:]}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert client.post("/fhir", json=bundle, headers=headers).status_code == 403
    second = client.post("/fhir/Appointment/$book", json=_for("anne", "vb"), headers=headers)
    assert second.status_code == 409, second.text
    noted = client.put(url, json={**booked, "comment": "I will come by bus"}, headers=headers)
    assert noted.status_code == 200, noted.text
    reason = {"text": "I am away"}
    cancelled = {**noted.json(), "status": "cancelled", "cancelationReason": reason}
    assert client.put(url, json=cancelled, headers=headers).status_code == 200
    assert _slot_status(records, "va") == "free"


def test_a_clinician_moves_an_appointment_the_patient_cannot(
    records: RecordStore, tmp_path: Path
) -> None:
    """A clinician's latitude stays: they move a patient's appointment, even into the
    past; it still counts as hers to come while the seat it holds is to come."""
    client, headers = _anne_with(records, tmp_path, BOOKING_APP)
    with records.writer() as writer:  # a clinician's write, on the patient's seat
        moved = {**_for("anne", "va", status="booked"), "start": "2020-01-01T09:00:00Z"}
        moved["end"] = "2020-01-01T09:05:00Z"
        writer.create(moved)
    assert _slot_status(records, "va") == "busy"
    second = client.post("/fhir/Appointment/$book", json=_for("anne", "vb"), headers=headers)
    assert second.status_code == 409, second.text


def test_a_seat_that_names_no_service_is_its_centres_service(
    patient_app: tuple[TestClient, dict[str, str]], records: RecordStore
) -> None:
    """At a vaccination centre whose seats name no service, $find proposes a vaccination,
    and her booking of such a seat counts as one, whatever the Appointment she sends says:
    else she would book its every seat."""
    client, headers = patient_app
    with records.writer() as writer:
        centre = {"resourceType": "Schedule", "id": "vaxc", "serviceType": [VACCINATION]}
        centre["actor"] = [{"reference": "Location/centre-laval"}]
        writer.update("Schedule", "vaxc", centre)
        for seat in ("n1", "n2"):
            slot = {"resourceType": "Slot", "id": seat, "schedule": {"reference": "Schedule/vaxc"}}
            slot.update(status="free", start="2031-03-03T09:00:00Z", end="2031-03-03T09:05:00Z")
            writer.update("Slot", seat, slot)
    found = client.get("/fhir/Appointment/$find?schedule=vaxc&start=2031-03-03", headers=headers)
    assert found.status_code == 200, found.text
    (entry,) = found.json()["entry"]
    assert entry["resource"]["serviceType"] == [VACCINATION]
    first = client.post("/fhir/Appointment/$book", json=_for("anne", "n1"), headers=headers)
    assert first.status_code == 201, first.text
    second = client.post("/fhir/Appointment/$book", json=_for("anne", "n2"), headers=headers)
    assert second.status_code == 409, second.text
    assert _slot_status(records, "n2") == "free"
