"""``Appointment/$find`` and ``Appointment/$book``: a vaccination campaign's seats
offered once per time, booked by a crowd, never twice."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from conftest import FHIR_JSON, RunningServer, put_resource
from starlette.testclient import TestClient

from coffre.fhir.primitives import TZ_CODE
from coffre.service import RecordStore, Vault, booking
from coffre.service.audit import Access
from coffre.service.erasure import erase_patient

FUTURE, PAST = "2031-03-01", "2020-03-01"
VACCINATION = {"coding": [{"system": "http://snomed.info/sct", "code": "33879002"}]}


def _schedule(schedule_id: str, location: str) -> dict[str, Any]:
    return {
        "resourceType": "Schedule",
        "id": schedule_id,
        "actor": [{"reference": f"Location/{location}"}],
    }


def _seat(slot_id: str, schedule: str, day: str, time: str, status: str = "free") -> dict[str, Any]:
    return {
        "resourceType": "Slot",
        "id": slot_id,
        "schedule": {"reference": f"Schedule/{schedule}"},
        "serviceType": [VACCINATION],
        "status": status,
        "start": f"{day}T{time}:00Z",
        "end": f"{day}T{time[:3]}{int(time[3:]) + 5:02d}:00Z",
    }


def _patient(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "name": [{"family": "Tremblay"}]}


def _campaign(client: TestClient) -> None:
    """Laval: three seats at 9:00, two at 9:05, one busy at 9:10, one gone by; Gatineau:
    one seat at 9:00. Anne has a record; Bruno had one, deleted."""
    put_resource(client, _patient("anne"))
    put_resource(client, _patient("bruno"))
    assert client.delete("/fhir/Patient/bruno").status_code == 204
    for schedule, location in (("laval", "centre-laval"), ("gatineau", "centre-gatineau")):
        put_resource(client, _schedule(schedule, location))
    seats = [
        _seat("l900a", "laval", FUTURE, "09:00"),
        _seat("l900b", "laval", FUTURE, "09:00"),
        _seat("l900c", "laval", FUTURE, "09:00"),
        _seat("l905a", "laval", FUTURE, "09:05"),
        _seat("l905b", "laval", FUTURE, "09:05"),
        _seat("l910a", "laval", FUTURE, "09:10", "busy"),
        _seat("lpast", "laval", PAST, "09:00"),
        _seat("g900a", "gatineau", FUTURE, "09:00"),
    ]
    for seat in seats:
        put_resource(client, seat)


def _find(client: TestClient, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/Appointment/$find?{query}")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return [entry["resource"] for entry in bundle.get("entry", [])]


def _book(client: TestClient | httpx.Client, appointment: dict[str, Any]) -> Any:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "appointment-resource", "resource": appointment}],
    }
    return client.post("/fhir/Appointment/$book", json=parameters, headers=FHIR_JSON)


def _slot_of(appointment: dict[str, Any]) -> str:
    reference: str = appointment["slot"][0]["reference"]
    return reference.removeprefix("Slot/")


def test_find_offers_each_free_time_once_for_the_patient(client: TestClient) -> None:
    _campaign(client)
    offers = _find(client, f"location=Location/centre-laval&start={FUTURE}&patient=Patient/anne")
    assert [offer["start"] for offer in offers] == ["2031-03-01T09:00:00Z", "2031-03-01T09:05:00Z"]
    first = offers[0]
    assert first["status"] == "proposed"
    assert _slot_of(first) in {"l900a", "l900b", "l900c"}
    assert first["serviceType"] == [VACCINATION]
    actors = [p["actor"]["reference"] for p in first["participant"]]
    assert actors == ["Location/centre-laval", "Patient/anne"]


def test_find_keeps_to_its_window_place_and_count(client: TestClient) -> None:
    _campaign(client)
    everywhere = _find(client, f"start={FUTURE}T08:00:00Z")
    assert sorted(_slot_of(o)[:1] for o in everywhere) == ["g", "l", "l"]
    assert (
        _find(client, f"start={FUTURE}&end={FUTURE}T09:01:00Z&location=centre-laval")[0]["start"]
        == "2031-03-01T09:00:00Z"
    )
    assert len(_find(client, f"start={FUTURE}&location=centre-laval&_count=1")) == 1
    assert _find(client, f"start={FUTURE}&location=nowhere") == []


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("start=2031-03-01&end=2031-02-01", "end=2031-02-01 is not after start=2031-03-01"),
        ("start=2031-03-01&end=2020-02-01", "end=2020-02-01 is not after start=2031-03-01"),
        ("start=2020-01-01&end=2020-01-05", "is not after now: $find offers times to come"),
        ("_count=0", "offers nothing"),
        ("start=2031-03-01&end=2031-06-01", "31 days at most"),
        ("location=Patient/anne", "names no Location"),
        ("date=2031-03-01", "does not support date"),
        ("start=soon", "'soon' is not a FHIR date"),
        ("start=9999-12-31T23:59:59.999999-14:00", "is after 9999-12-31, the last day"),
    ],
)
def test_find_refuses_what_it_cannot_answer(client: TestClient, query: str, says: str) -> None:
    response = client.get(f"/fhir/Appointment/$find?{query}")
    assert response.status_code == 400, response.text
    assert says in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "query", ["start=9999-12-31", "start=9999-12-31&end=9999-12-31T23:59:59.999999Z"]
)
def test_find_on_the_last_day_a_date_names_offers_nothing(client: TestClient, query: str) -> None:
    _campaign(client)
    assert _find(client, query) == []


def test_a_crowd_on_one_offer_fills_its_seats_then_gets_a_409(client: TestClient) -> None:
    _campaign(client)
    offer = _find(client, f"location=centre-laval&start={FUTURE}&patient=Patient/anne")[0]
    taken = []
    for _ in range(3):
        response = _book(client, offer)
        assert response.status_code == 201, response.text
        assert response.headers["Location"].startswith("http://testserver/fhir/Appointment/")
        booked = response.json()
        assert booked["status"] == "booked"
        assert {p["status"] for p in booked["participant"]} == {"accepted"}
        assert booked["start"] == offer["start"]
        taken.append(_slot_of(booked))
    assert sorted(taken) == ["l900a", "l900b", "l900c"]
    full = _book(client, offer)
    assert full.status_code == 409, full.text
    assert "so is every other seat at that time" in full.json()["issue"][0]["diagnostics"]
    for slot_id in taken:
        assert client.get(f"/fhir/Slot/{slot_id}").json()["status"] == "busy"
    held = client.get("/fhir/Appointment?slot=Slot/l900a,Slot/l900b,Slot/l900c&_total=accurate")
    assert held.json()["total"] == 3
    assert [o["start"] for o in _find(client, f"location=centre-laval&start={FUTURE}")] == [
        "2031-03-01T09:05:00Z"
    ]


def _for(patient: str, slot: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "proposed",
        "slot": [{"reference": f"Slot/{slot}"}],
        "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}],
        **fields,
    }


def _for_anne(slot: str, **fields: Any) -> dict[str, Any]:
    return _for("anne", slot, **fields)


@pytest.mark.parametrize(
    ("appointment", "status", "says"),
    [
        (_for_anne("lpast"), 409, "Slot/lpast began at 2020-03-01T09:00:00Z"),
        (_for_anne("l910a"), 409, "Slot/l910a is already booked"),
        (_for_anne("nowhere"), 422, "Slot/nowhere does not exist"),
        (_for_anne("l900a", status="cancelled"), 422, "not cancelled"),
        ({**_for_anne("l900a"), "slot": [{"display": "9:00"}]}, 422, "needs the Slot"),
        (
            {
                **_for_anne("l900a"),
                "participant": [{"actor": {"reference": "Location/x"}, "status": "accepted"}],
            },
            422,
            "needs the patient",
        ),
        (
            {
                **_for_anne("l900a"),
                "participant": [
                    {"actor": {"reference": f"Patient/{p}"}, "status": "accepted"}
                    for p in ("anne", "bruno")
                ],
            },
            422,
            "names 2 patients: $book books for one",
        ),
        (_for_anne("l900a", id="mine"), 400, "without an id"),
        (_for_anne("l900a", start="2030-01-01T00:00:00Z"), 422, "Appointment.start is not"),
        (_for_anne("l900a", end="2031-03-01T08:55:00Z"), 422, "Appointment.end is not the end"),
        (_for("nobody", "l900a"), 422, "Patient/nobody does not exist on this server"),
        (_for("bruno", "l900a"), 422, "Patient/bruno was deleted on this server"),
        ({"resourceType": "Patient"}, 400, "Appointment"),
    ],
)
def test_book_refuses_with_a_reason(
    client: TestClient, appointment: dict[str, Any], status: int, says: str
) -> None:
    _campaign(client)
    response = _book(client, appointment)
    assert response.status_code == status, response.text
    assert says in response.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Appointment?_total=accurate").json()["total"] == 0


def test_book_takes_the_slot_s_times_however_written(client: TestClient) -> None:
    _campaign(client)
    times = {"start": "2031-03-01T10:00:00+01:00", "end": "2031-03-01T09:05:00.000Z"}
    response = _book(client, _for_anne("l900a", **times))
    assert response.status_code == 201, response.text
    assert {key: response.json()[key] for key in times} == times


def test_book_takes_the_appointment_itself_or_the_argonaut_name(client: TestClient) -> None:
    _campaign(client)
    itself = client.post("/fhir/Appointment/$book", json=_for_anne("l905a"), headers=FHIR_JSON)
    assert itself.status_code == 201, itself.text
    argonaut = {
        "resourceType": "Parameters",
        "parameter": [{"name": "appt-resource", "resource": _for_anne("l905b")}],
    }
    named = client.post("/fhir/Appointment/$book", json=argonaut, headers=FHIR_JSON)
    assert named.status_code == 201, named.text
    extra = {**argonaut, "parameter": [*argonaut["parameter"], {"name": "x", "valueString": "y"}]}
    refused = client.post("/fhir/Appointment/$book", json=extra, headers=FHIR_JSON)
    assert refused.status_code == 400
    assert "$book does not take x" in refused.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("parameter", "says"),
    [
        (5, "Parameters.parameter"),
        ({"name": "appointment-resource"}, "Parameters.parameter"),
        ([{"name": "appointment-resource", "resource": 5}], "Parameters.parameter[0].resource"),
        ([{"name": 7, "resource": _for_anne("l900a")}], "Parameters.parameter[0].name"),
    ],
)
def test_book_refuses_parameters_that_are_not_valid_as_422_naming_the_element(
    client: TestClient, parameter: Any, says: str
) -> None:
    _campaign(client)
    parameters = {"resourceType": "Parameters", "parameter": parameter}
    response = client.post("/fhir/Appointment/$book", json=parameters, headers=FHIR_JSON)
    assert response.status_code in (400, 422), response.text
    assert says in response.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Appointment?_total=accurate").json()["total"] == 0


@pytest.fixture
def two_workers(vault: Vault) -> Any:
    running = RunningServer(vault, workers=2)
    yield running
    running.stop()


def test_a_burst_on_two_processes_books_each_seat_once(two_workers: RunningServer) -> None:
    """Forty patients at once on ten seats of one time, over new connections spread on
    both server processes: ten bookings, thirty 409s, each seat held by one."""
    with httpx.Client(base_url=two_workers.base_url, timeout=60) as client:
        client.put(
            "/Schedule/laval", json=_schedule("laval", "centre-laval"), headers=FHIR_JSON
        ).raise_for_status()
        for n in range(10):
            seat = _seat(f"s{n}", "laval", FUTURE, "09:00")
            client.put(f"/Slot/s{n}", json=seat, headers=FHIR_JSON).raise_for_status()
        for n in range(40):
            patient = _patient(f"p{n}")
            client.put(f"/Patient/p{n}", json=patient, headers=FHIR_JSON).raise_for_status()

    async def crowd() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=two_workers.base_url, limits=limits, timeout=60) as c:
            books = [_book_async(c, _for(f"p{n}", "s0")) for n in range(40)]
            return await asyncio.gather(*books)

    answers = asyncio.run(crowd())
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] * 10 + [409] * 30, [r.text for r in answers if r.status_code >= 500]
    seats = [_slot_of(r.json()) for r in answers if r.status_code == 201]
    assert sorted(seats) == sorted(f"s{n}" for n in range(10))


async def _book_async(client: httpx.AsyncClient, appointment: dict[str, Any]) -> httpx.Response:
    return await client.post("/Appointment/$book", json=appointment, headers=FHIR_JSON)


def test_a_seat_opened_since_is_offered_once_the_seats_are_read_again(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$find keeps a day's seats a few seconds, and reads each offer again: one taken since
    is never offered, one opened since is once they are read again."""
    _campaign(client)
    query = f"location=centre-laval&start={FUTURE}"
    assert _find(client, query)[0]["start"] == "2031-03-01T09:00:00Z"
    put_resource(client, _seat("l850a", "laval", FUTURE, "08:50"))
    assert _find(client, query)[0]["start"] == "2031-03-01T09:00:00Z"  # the seats kept
    monkeypatch.setattr(booking, "SEATS_SECONDS", 0.0)
    assert _find(client, query)[0]["start"] == "2031-03-01T08:50:00Z"


def test_book_for_an_erased_patient_is_410_and_takes_no_seat(
    client: TestClient, records: RecordStore
) -> None:
    _campaign(client)
    erase_patient(records, "anne", Access("Claire Dubé (coffre erase)", reason="Law 25"))
    response = _book(client, _for_anne("l900a"))
    assert response.status_code == 410, response.text
    assert client.get("/fhir/Slot/l900a").json()["status"] == "free"


def _for_anne_on(*slots: str) -> dict[str, Any]:
    return {**_for_anne(slots[0]), "slot": [{"reference": f"Slot/{s}"} for s in slots]}


def test_a_booking_of_two_seats_never_holds_one_twice(client: TestClient) -> None:
    """A seat taken is replaced by another of its time that the booking does not name
    already, later or before: a 409 when no such seat is left."""
    _campaign(client)
    put_resource(client, _seat("l900a", "laval", FUTURE, "09:00", "busy"))
    both = _book(client, _for_anne_on("l900a", "l900b"))
    assert both.status_code == 201, both.text
    assert [slot["reference"] for slot in both.json()["slot"]] == ["Slot/l900c", "Slot/l900b"]
    put_resource(client, _seat("l905a", "laval", FUTURE, "09:05", "busy"))
    refused = _book(client, _for_anne_on("l905a", "l905b"))
    assert refused.status_code == 409, refused.text
    assert client.get("/fhir/Slot/l905b").json()["status"] == "free"


def test_find_of_a_date_offers_the_centre_s_own_day(client: TestClient) -> None:
    """A Montreal centre's 19:30 of the 1st is 00:30 UTC the 2nd: it is offered for
    start=2031-03-01, its 21:00 of the 28th (02:00 UTC the 1st) is not."""
    montreal = {
        **_schedule("montreal", "centre-montreal"),
        "planningHorizon": {
            "start": "2031-01-01T00:00:00-05:00",
            "_start": {"extension": [{"url": TZ_CODE, "valueCode": "America/Montreal"}]},
        },
    }
    put_resource(client, montreal)
    put_resource(client, _seat("evening", "montreal", "2031-03-02", "00:30"))
    put_resource(client, _seat("eve", "montreal", FUTURE, "02:00"))
    offers = _find(client, f"location=centre-montreal&start={FUTURE}")
    assert [_slot_of(offer) for offer in offers] == ["evening"]
