"""No slot is booked twice, whatever a client writes: the rule the write path keeps for
every Appointment and Slot (coffre.booking.slots), over REST and in Bundles."""

from __future__ import annotations

from typing import Any

from conftest import FHIR_JSON, put_resource
from starlette.testclient import TestClient

from coffre.service import RecordStore
from coffre.service.audit import Access
from coffre.service.erasure import erase_patient


def _slot(slot_id: str, status: str = "free") -> dict[str, Any]:
    return {
        "resourceType": "Slot",
        "id": slot_id,
        "schedule": {"reference": "Schedule/centre-laval"},
        "status": status,
        "start": "2031-03-01T09:00:00Z",
        "end": "2031-03-01T09:05:00Z",
    }


def _appointment(*slots: str, status: str = "booked", patient: str = "anne") -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": status,
        "slot": [{"reference": f"Slot/{s}"} for s in slots],
        "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}],
    }


def _status(client: TestClient, slot_id: str) -> str:
    status: str = client.get(f"/fhir/Slot/{slot_id}").json()["status"]
    return status


def _book(client: TestClient, *slots: str, **options: Any) -> Any:
    return client.post("/fhir/Appointment", json=_appointment(*slots, **options), headers=FHIR_JSON)


def _count(client: TestClient, query: str) -> int:
    total: int = client.get(f"/fhir/{query}&_total=accurate").json()["total"]
    return total


def test_an_appointment_takes_its_slot_and_a_second_one_is_a_409(client: TestClient) -> None:
    put_resource(client, _slot("s1"))
    assert _book(client, "s1").status_code == 201
    assert _status(client, "s1") == "busy"
    second = _book(client, "s1", patient="bruno")
    assert second.status_code == 409, second.text
    issue = second.json()["issue"][0]
    assert "Slot/s1 is already booked" in issue["diagnostics"]
    assert issue["expression"] == ["Appointment.slot"]
    assert _count(client, "Appointment?slot=Slot/s1") == 1  # nothing of the second written


def test_a_cancelled_or_deleted_appointment_frees_its_slot(client: TestClient) -> None:
    put_resource(client, _slot("s1"))
    put_resource(client, _slot("s2"))
    first = _book(client, "s1").json()
    client.put(
        f"/fhir/Appointment/{first['id']}",
        json={**first, "status": "cancelled"},
        headers=FHIR_JSON,
    ).raise_for_status()
    assert _status(client, "s1") == "free"
    assert _book(client, "s1", patient="bruno").status_code == 201

    second = _book(client, "s2").json()
    assert client.delete(f"/fhir/Appointment/{second['id']}").status_code in (200, 204)
    assert _status(client, "s2") == "free"


def test_an_appointment_moved_to_another_slot_lets_the_first_go(client: TestClient) -> None:
    put_resource(client, _slot("s1"))
    put_resource(client, _slot("s2"))
    booked = _book(client, "s1").json()
    moved = {**booked, "slot": [{"reference": "Slot/s2"}]}
    response = client.put(f"/fhir/Appointment/{booked['id']}", json=moved, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert (_status(client, "s1"), _status(client, "s2")) == ("free", "busy")


def test_a_proposed_appointment_holds_nothing_until_booked(client: TestClient) -> None:
    put_resource(client, _slot("s1"))
    proposed = _book(client, "s1", status="proposed").json()
    assert _status(client, "s1") == "free"
    assert _book(client, "s1", patient="bruno").status_code == 201
    booked = {**proposed, "status": "booked"}
    response = client.put(f"/fhir/Appointment/{proposed['id']}", json=booked, headers=FHIR_JSON)
    assert response.status_code == 409, response.text


def test_an_appointment_holds_its_slot_once_the_slot_is_written(client: TestClient) -> None:
    """A transaction runs its POSTs before its PUTs, an import its files in any order: the
    Slot written after its Appointment is written busy, and held."""
    assert _book(client, "later").status_code == 201
    assert _book(client, "later", patient="bruno").status_code == 409  # held before it exists
    put_resource(client, _slot("later"))
    assert _status(client, "later") == "busy"
    assert _book(client, "later", patient="bruno").status_code == 409
    assert _count(client, "Appointment?slot=Slot/later") == 1
    entries = [
        {"resource": _slot("s1"), "request": {"method": "PUT", "url": "Slot/s1"}},
        {"resource": _appointment("s1"), "request": {"method": "POST", "url": "Appointment"}},
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    assert _status(client, "s1") == "busy"


def test_a_slot_busy_before_its_appointment_is_held_by_it_alone(client: TestClient) -> None:
    """As an export lists them: the Slot busy, then the Appointment that holds it."""
    put_resource(client, _slot("s1", "busy"))
    put_resource(client, _slot("closed", "busy-unavailable"))
    assert _book(client, "s1").status_code == 201
    assert _book(client, "closed").status_code == 201
    assert (_status(client, "s1"), _status(client, "closed")) == ("busy", "busy-unavailable")
    for slot in ("s1", "closed"):
        second = _book(client, slot, patient="bruno")
        assert second.status_code == 409, second.text
        assert f"Slot/{slot} is already booked" in second.json()["issue"][0]["diagnostics"]


def test_a_held_slot_is_neither_freed_nor_deleted_by_hand(client: TestClient) -> None:
    put_resource(client, _slot("s1"))
    _book(client, "s1").raise_for_status()
    freed = client.put("/fhir/Slot/s1", json=_slot("s1"), headers=FHIR_JSON)
    assert freed.status_code == 409, freed.text
    assert "held by an appointment" in freed.json()["issue"][0]["diagnostics"]
    closed = client.put("/fhir/Slot/s1", json=_slot("s1", "busy-unavailable"), headers=FHIR_JSON)
    assert closed.status_code == 200, closed.text  # closing it keeps the appointment
    assert client.put("/fhir/Slot/s1", json=_slot("s1"), headers=FHIR_JSON).status_code == 409
    assert client.delete("/fhir/Slot/s1").status_code == 409
    assert _status(client, "s1") == "busy-unavailable"


def test_a_slot_closed_by_hand_opens_again_when_nobody_holds_it(client: TestClient) -> None:
    put_resource(client, _slot("s1", "busy"))
    assert client.put("/fhir/Slot/s1", json=_slot("s1"), headers=FHIR_JSON).status_code in (
        200,
        204,
    )
    assert client.delete("/fhir/Slot/s1").status_code in (200, 204)


def _two_bookings(kind: str) -> dict[str, Any]:
    """A Bundle of two patients' appointments on Slot/s1."""
    entries = [
        {
            "resource": _appointment("s1", patient=p),
            "request": {"method": "POST", "url": "Appointment"},
        }
        for p in ("anne", "bruno")
    ]
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_a_transaction_booking_one_slot_twice_changes_nothing(client: TestClient) -> None:
    put_resource(client, _slot("s1"))
    response = client.post("/fhir", json=_two_bookings("transaction"), headers=FHIR_JSON)
    assert response.status_code == 409, response.text
    assert _status(client, "s1") == "free"
    assert _count(client, "Appointment?slot=Slot/s1") == 0


def test_a_transaction_booking_twice_a_slot_it_writes_after_changes_nothing(
    client: TestClient,
) -> None:
    """A transaction runs its POSTs before its PUTs: the two bookings come before the Slot
    they hold, whether the Slot is PUT or POSTed under a urn:uuid they name."""
    put = {"resource": _slot("s1"), "request": {"method": "PUT", "url": "Slot/s1"}}
    by_urn = {
        "fullUrl": "urn:uuid:9a3c1e52-6a43-4f0e-a0f4-0d2b7a1c5e11",
        "resource": {key: value for key, value in _slot("s1").items() if key != "id"},
        "request": {"method": "POST", "url": "Slot"},
    }
    for slot_entry in (put, by_urn):
        bundle = _two_bookings("transaction")
        if slot_entry is by_urn:
            for entry in bundle["entry"]:
                entry["resource"]["slot"] = [{"reference": by_urn["fullUrl"]}]
        bundle["entry"].append(slot_entry)
        response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert response.status_code == 409, response.text
        assert _count(client, "Appointment?status=booked") == 0
        assert _count(client, "Slot?status=free,busy") == 0


def test_a_batch_books_the_slot_once(client: TestClient) -> None:
    put_resource(client, _slot("s1"))
    answered = client.post("/fhir", json=_two_bookings("batch"), headers=FHIR_JSON).json()
    statuses = [entry["response"]["status"] for entry in answered["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("409"), statuses


def test_a_patient_holding_seats_to_come_is_not_deleted_until_they_are_cancelled(
    client: TestClient,
) -> None:
    """Deleted, she would keep her seats, booked for nobody: lost to the campaign."""
    put_resource(client, {"resourceType": "Patient", "id": "anne"})
    put_resource(client, _slot("s1"))
    past = {**_slot("s0"), "start": "2020-03-01T09:00:00Z", "end": "2020-03-01T09:05:00Z"}
    put_resource(client, past)
    assert _book(client, "s0").status_code == 201  # a seat gone by holds nothing to come
    booked = _book(client, "s1").json()
    refused = client.delete("/fhir/Patient/anne")
    assert refused.status_code == 409, refused.text
    said = refused.json()["issue"][0]["diagnostics"]
    assert f"Appointment/{booked['id']}" in said and "cancel them first" in said
    assert client.get("/fhir/Patient/anne").status_code == 200 and _status(client, "s1") == "busy"
    cancelled = {**booked, "status": "cancelled"}
    put_resource(client, cancelled)
    assert client.delete("/fhir/Patient/anne").status_code in (200, 204)


def test_an_erased_patient_lets_go_of_her_slots(client: TestClient, records: RecordStore) -> None:
    put_resource(client, _slot("s1"))
    put_resource(client, {"resourceType": "Patient", "id": "anne"})
    assert _book(client, "s1").status_code == 201
    erase_patient(records, "anne", Access("Claire Dubé (coffre erase)", reason="Law 25"))
    assert _status(client, "s1") == "free"
    assert _book(client, "s1", patient="bruno").status_code == 201


def test_an_erased_patient_s_shared_appointment_keeps_its_slot(
    client: TestClient, records: RecordStore
) -> None:
    """An Appointment naming two patients is sealed under the shared key: erasing one of
    them leaves it readable and holding its seat, which no one else may then book."""
    for patient in ("anne", "bruno", "carole"):
        put_resource(client, {"resourceType": "Patient", "id": patient})
    put_resource(client, _slot("shared"))
    put_resource(client, _slot("own"))
    together = _appointment("shared")
    together["participant"].append({"actor": {"reference": "Patient/bruno"}, "status": "accepted"})
    shared = client.post("/fhir/Appointment", json=together, headers=FHIR_JSON)
    assert shared.status_code == 201, shared.text
    assert _book(client, "own").status_code == 201
    erase_patient(records, "anne", Access("Claire Dubé (coffre erase)", reason="Law 25"))
    assert client.get(f"/fhir/Appointment/{shared.json()['id']}").json()["status"] == "booked"
    assert (_status(client, "shared"), _status(client, "own")) == ("busy", "free")
    second = _book(client, "shared", patient="carole")
    assert second.status_code == 409, second.text
    assert _count(client, "Appointment?slot=Slot/shared") == 1
