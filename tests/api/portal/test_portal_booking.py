"""The portal's booking page, in process: a patient finds the free times of a centre's
local day, books one, sees it to come, cancels it; a time taken meanwhile, a form sent
twice, another patient's appointment."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from portal_kit import (
    CENTRE,
    CLINICIAN,
    PATIENT,
    authority_with_users,
    centre_opening,
    hidden,
    patient_record,
    sign_in,
    tomorrow,
)
from starlette.testclient import TestClient

from coffre.api import create_app
from coffre.api.portal import booking as portal_booking
from coffre.api.portal.summary import moment
from coffre.booking.book import OneToCome
from coffre.ledger.leaf import Leaf, LeafKind
from coffre.service import RecordStore, Stored
from coffre.service.audit import Access
from coffre.service.booking import book
from coffre.service.stored import now_us


def open_centre(records: RecordStore) -> None:
    with records.writer() as writer:
        for resource in centre_opening():
            writer.update(resource["resourceType"], resource["id"], resource)


@pytest.fixture
def portal(records: RecordStore, tmp_path: Path) -> Iterator[TestClient]:
    patient_record(records)
    open_centre(records)
    app = create_app(records, authority=authority_with_users(tmp_path))
    with TestClient(app, raise_server_exceptions=False) as client:
        sign_in(client)
        yield client


def _times(portal: TestClient) -> tuple[str, list[str]]:
    """The day's page for the centre, and the seats its time buttons book."""
    page = portal.get("/portal/booking", params={"centre": "stade", "day": tomorrow()})
    assert page.status_code == 200, page.text
    return page.text, re.findall(r'name="slot" value="([^"]+)"', page.text)


def _book(portal: TestClient, page: str, slot: str) -> object:
    form = {"csrf": hidden(page, "csrf"), "slot": slot, "centre": "stade", "day": tomorrow()}
    return portal.post("/portal/booking", data=form, follow_redirects=False)


def _status(records: RecordStore, slot: str) -> object:
    return records.read("Slot", slot).resource()["status"]


def test_a_patient_books_a_time_of_the_centres_local_day_and_sees_it_to_come(
    portal: TestClient, records: RecordStore
) -> None:
    page, seats = _times(portal)
    assert CENTRE in unescape(page)
    assert len(seats) == 2  # 09:00 and 19:30, each once; 00:30 is the next local day
    assert [re.search(rf'value="{s}">(\d\d:\d\d)<', page).group(1) for s in seats] == [  # type: ignore[union-attr]
        "09:00",
        "19:30",
    ]
    before = records.storage.leaf_count()
    booked = _book(portal, page, seats[0])
    assert booked.status_code == 303  # type: ignore[attr-defined]
    assert booked.headers["location"] == "/portal/booking?booked=1"  # type: ignore[attr-defined]
    leaves = [Leaf.decode(d) for d in records.storage.leaves(before, records.storage.leaf_count())]
    assert LeafKind.CREATE in [leaf.kind for leaf in leaves]
    assert _status(records, seats[0]) == "busy"
    (appointment,) = records.all_of_type("Appointment")
    resource = appointment.resource()
    assert resource["status"] == "booked"
    assert {p["actor"]["reference"]: p["status"] for p in resource["participant"]} == {
        "Location/stade": "accepted",
        f"Patient/{PATIENT}": "accepted",
    }
    after = portal.get("/portal/booking?booked=1").text
    assert "Your appointment is booked." in after
    to_come = after[after.index('id="to-come"') : after.index('id="find"')]
    assert CENTRE in unescape(to_come) and f"{tomorrow()} 09:00 UTC-05:00" in to_come


def test_a_seat_written_in_utc_shows_the_time_of_the_centres_clocks(
    portal: TestClient, records: RecordStore
) -> None:
    """A Slot may be written in UTC (or any offset): its button shows the centre's time,
    and the heading names the zone the times are in."""
    seat = records.read("Slot", "nine-a").resource()
    at_nine = datetime.fromisoformat(seat["start"]).astimezone(UTC)
    seat["start"] = at_nine.isoformat().replace("+00:00", "Z")  # 14:00Z
    with records.writer() as writer:
        writer.update("Slot", "nine-a", seat)
    page, _ = _times(portal)
    assert re.findall(r'name="slot" value="[^"]+">(\d\d:\d\d)<', page) == ["09:00", "19:30"]
    assert "(UTC-05:00 time)" in unescape(page)


@pytest.mark.parametrize("slot", ["", "no-such-seat", "../Patient/x"])
def test_a_form_naming_no_seat_of_the_centre_says_so(portal: TestClient, slot: str) -> None:
    """Not that someone booked it just before: no one did."""
    page, _ = _times(portal)
    refused = _book(portal, page, slot)
    assert refused.status_code == 409  # type: ignore[attr-defined]
    assert "That time is not one the centre offers" in refused.text  # type: ignore[attr-defined]


def test_an_appointment_shows_the_day_and_time_of_the_centres_clocks(
    portal: TestClient, records: RecordStore
) -> None:
    """A seat written in UTC, 00:30Z, is 19:30 of the day before in Montreal: the lists of
    appointments say that day and time, and the zone, not the next day's 00:30 UTC."""
    with records.writer() as writer:
        for seat in ("evening-a", "evening-b"):
            slot = records.read("Slot", seat).resource()
            in_utc = datetime.fromisoformat(slot["start"]).astimezone(UTC)
            writer.update(
                "Slot", seat, {**slot, "start": in_utc.isoformat().replace("+00:00", "Z")}
            )
    page, seats = _times(portal)
    evening = next(seat for seat in seats if seat.startswith("evening-"))
    assert _book(portal, page, evening).status_code == 303  # type: ignore[attr-defined]
    said = f"{tomorrow()} 19:30 UTC-05:00"
    to_come = portal.get("/portal/booking").text
    assert said in to_come[to_come.index('id="to-come"') : to_come.index('id="find"')]
    assert said in portal.get("/portal/").text


@pytest.mark.parametrize("start", ["soon", "2031-13-45T09:00:00Z"])
def test_a_start_that_is_no_time_is_shown_as_written(
    portal: TestClient, records: RecordStore, start: str
) -> None:
    """Not a page that fails: the centre's clocks cannot read it."""
    appointment = {"start": start, "slot": [{"reference": "Slot/nine-a"}]}
    assert portal_booking.centre_moment(records, appointment) == moment(start)


def test_a_time_taken_meanwhile_books_another_seat_then_says_none_is_left(
    portal: TestClient, records: RecordStore
) -> None:
    page, seats = _times(portal)
    nine = next(seat for seat in seats if seat.startswith("nine-"))
    other = "nine-b" if nine == "nine-a" else "nine-a"
    taken_by_autre = {
        "resourceType": "Appointment",
        "status": "booked",
        "slot": [{"reference": f"Slot/{nine}"}],
        "participant": [{"actor": {"reference": "Patient/autre"}, "status": "accepted"}],
    }
    with records.writer() as writer:  # someone else takes that seat first
        writer.create(taken_by_autre)
    assert _book(portal, page, nine).status_code == 303  # type: ignore[attr-defined]
    assert _status(records, other) == "busy"
    (mine,) = [a for a in records.all_of_type("Appointment") if a.version == 1 and _holds(a, other)]
    with records.writer() as writer:  # she cancels, someone else takes that seat at once
        writer.update("Appointment", mine.id, {**mine.resource(), "status": "cancelled"})
        writer.create({**taken_by_autre, "slot": [{"reference": f"Slot/{other}"}]})
    refused = _book(portal, page, nine)
    assert refused.status_code == 409  # type: ignore[attr-defined]
    assert "Someone booked that time just before you" in refused.text  # type: ignore[attr-defined]


def _holds(appointment: Stored, slot: str) -> bool:
    return appointment.resource()["slot"] == [{"reference": f"Slot/{slot}"}]


def test_a_patient_holds_one_vaccination_appointment_to_come_at_a_time(
    portal: TestClient, records: RecordStore
) -> None:
    """Else one patient, by a form sent again and again, takes a centre's every seat."""
    page, seats = _times(portal)
    assert _book(portal, page, seats[0]).status_code == 303  # type: ignore[attr-defined]
    for seat in (seats[1], seats[0]):  # another time; the same time's other seat
        refused = _book(portal, page, seat)
        assert refused.status_code == 409  # type: ignore[attr-defined]
        assert "You already have a vaccination appointment to come" in refused.text  # type: ignore[attr-defined]
    assert len(records.all_of_type("Appointment")) == 1
    assert _status(records, seats[1]) == "free"


def test_an_appointment_she_does_not_see_does_not_count_as_hers_to_come(
    portal: TestClient, records: RecordStore
) -> None:
    """A clinician's vaccination appointment of hers and another patient's is hidden from
    her list, and she cannot cancel it: it keeps her from booking no more than it shows."""
    page, seats = _times(portal)
    shared = {
        "resourceType": "Appointment",
        "status": "booked",
        "serviceType": records.read("Schedule", "stade").resource()["serviceType"],
        "start": "2031-03-01T09:00:00Z",
        "participant": [
            {"actor": {"reference": f"Patient/{who}"}, "status": "accepted"}
            for who in (PATIENT, "autre")
        ],
    }
    with records.writer(CLINICIAN) as writer:
        writer.create(shared)
    assert "No appointment to come." in portal.get("/portal/booking").text
    assert _book(portal, page, seats[0]).status_code == 303  # type: ignore[attr-defined]


def test_two_bookings_of_one_patient_in_one_commit_are_one(
    portal: TestClient, records: RecordStore
) -> None:
    """The rule holds under the write lock: two forms sent at once, in one group commit."""
    appointments = [
        portal_booking._appointment_for(records, seat, PATIENT, now_us())
        for seat in ("nine-a", "evening-a")
    ]
    with records.writer(Access(f"Patient/{PATIENT}", role="patient", patient=PATIENT)) as writer:
        book(writer, appointments[0], now_us(), lambda _: None)
        with pytest.raises(OneToCome, match="appointment to come"):
            book(writer, appointments[1], now_us(), lambda _: None)
    assert _status(records, "evening-a") == "free"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"active": False}, "That centre no longer takes bookings"),
        (  # a hospital's MRI room is not a vaccination centre, whatever the form says
            {"serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}]},
            "That centre no longer takes bookings",
        ),
    ],
)
def test_a_form_from_before_a_centre_closed_books_nothing(
    portal: TestClient, records: RecordStore, change: dict[str, object], said: str
) -> None:
    page, seats = _times(portal)
    schedule = records.read("Schedule", "stade").resource()
    with records.writer() as writer:
        writer.update("Schedule", "stade", {**schedule, **change})
    refused = _book(portal, page, seats[0])
    assert refused.status_code == 409 and said in refused.text  # type: ignore[attr-defined]
    assert _status(records, seats[0]) == "free"


def test_a_past_time_is_said_past_and_a_past_appointment_is_not_cancelled(
    portal: TestClient, records: RecordStore
) -> None:
    page, _ = _times(portal)
    past = {"start": "2026-01-05T09:00:00-05:00", "end": "2026-01-05T09:05:00-05:00"}
    given = {
        "resourceType": "Appointment",
        "status": "fulfilled",
        "serviceType": records.read("Schedule", "stade").resource()["serviceType"],
        "slot": [{"reference": "Slot/past"}],
        "participant": [{"actor": {"reference": f"Patient/{PATIENT}"}, "status": "accepted"}],
        **past,
    }
    with records.writer() as writer:
        slot = {**records.read("Slot", "nine-a").resource(), "id": "past", **past}
        writer.update("Slot", "past", slot)
        writer.create(given)
    refused = _book(portal, page, "past")
    assert refused.status_code == 409 and "That time has passed" in refused.text  # type: ignore[attr-defined]
    (appointment,) = records.all_of_type("Appointment")
    form = {"csrf": hidden(page, "csrf"), "appointment": appointment.id, "version": "1"}
    kept = portal.post("/portal/booking/cancel", data=form)
    assert kept.status_code == 409 and "has begun or is past" in kept.text
    assert records.read("Appointment", appointment.id).resource()["status"] == "fulfilled"


def test_an_appointment_whose_seat_is_to_come_is_to_come_whatever_its_start_says(
    portal: TestClient, records: RecordStore
) -> None:
    """A clinician moved its start into the past: its seat, still held, is to come. It is
    listed, she cancels it, and it counts as her one vaccination to come meanwhile."""
    page, seats = _times(portal)
    assert _book(portal, page, seats[1]).status_code == 303  # type: ignore[attr-defined]
    (booked,) = records.all_of_type("Appointment")
    moved = {**booked.resource(), "start": "2026-01-05T09:00:00Z", "end": "2026-01-05T09:05:00Z"}
    with records.writer(CLINICIAN) as writer:
        writer.update("Appointment", booked.id, moved)
    refused = _book(portal, page, seats[0])
    assert refused.status_code == 409  # type: ignore[attr-defined]
    assert "You already have a vaccination appointment to come" in refused.text  # type: ignore[attr-defined]
    listed = portal.get("/portal/booking").text
    assert hidden(listed, "appointment") == booked.id
    form = {"csrf": hidden(listed, "csrf"), "appointment": booked.id, "version": "2"}
    cancelled = portal.post("/portal/booking/cancel", data=form, follow_redirects=False)
    assert cancelled.headers["location"] == "/portal/booking?cancelled=1"
    assert _status(records, seats[1]) == "free"


def test_a_patient_cancels_their_appointment_once_and_its_seat_is_free_again(
    portal: TestClient, records: RecordStore
) -> None:
    page, seats = _times(portal)
    _book(portal, page, seats[1])
    listed = portal.get("/portal/booking").text
    form = {
        "csrf": hidden(listed, "csrf"),
        "appointment": hidden(listed, "appointment"),
        "version": hidden(listed, "version"),
    }
    stale = portal.post("/portal/booking/cancel", data={**form, "version": "7"})
    assert stale.status_code == 409 and "nothing was cancelled" in stale.text
    cancelled = portal.post("/portal/booking/cancel", data=form, follow_redirects=False)
    assert cancelled.headers["location"] == "/portal/booking?cancelled=1"
    assert _status(records, seats[1]) == "free"
    again = portal.post("/portal/booking/cancel", data=form)
    assert again.status_code == 409
    assert "No appointment to come." in portal.get("/portal/booking").text
    without_csrf = portal.post("/portal/booking/cancel", data={**form, "csrf": "x"})
    assert without_csrf.status_code == 403


@pytest.mark.parametrize("version", ["²", "9" * 4000, "9" * 30, "-1", "1.0", ""])
def test_a_cancel_form_whose_version_is_no_version_cancels_nothing(
    portal: TestClient, records: RecordStore, version: str
) -> None:
    page, seats = _times(portal)
    _book(portal, page, seats[1])
    listed = portal.get("/portal/booking").text
    appointment = hidden(listed, "appointment")
    form = {"csrf": hidden(listed, "csrf"), "appointment": appointment, "version": version}
    refused = portal.post("/portal/booking/cancel", data=form)
    assert refused.status_code == 409, refused.text
    assert "nothing was cancelled" in refused.text
    assert records.read("Appointment", appointment).resource()["status"] == "booked"
    assert _status(records, seats[1]) == "busy"


def test_another_patients_appointment_is_not_hers_to_cancel(
    portal: TestClient, records: RecordStore
) -> None:
    with records.writer() as writer:
        theirs = writer.create(
            {
                "resourceType": "Appointment",
                "status": "booked",
                "slot": [{"reference": "Slot/evening-a"}],
                "participant": [{"actor": {"reference": "Patient/autre"}, "status": "accepted"}],
            }
        ).stored
    page = portal.get("/portal/booking").text
    form = {"csrf": hidden(page, "csrf"), "appointment": theirs.id, "version": "1"}
    refused = portal.post("/portal/booking/cancel", data=form)
    assert refused.status_code == 404
    assert records.read("Appointment", theirs.id).resource()["status"] == "booked"


@pytest.mark.parametrize("day", ["hier", "2001-01-01", "2999-01-01"])
def test_a_day_that_is_not_to_come_is_refused(portal: TestClient, day: str) -> None:
    response = portal.get("/portal/booking", params={"centre": "stade", "day": day})
    assert response.status_code == 400
    assert "could not be understood" in response.text


def test_the_page_is_in_french_too(portal: TestClient) -> None:
    asked = {"centre": "stade", "day": tomorrow(), "lang": "fr"}
    page = portal.get("/portal/booking", params=asked).text
    assert "Mes rendez-vous à venir" in unescape(page) and "Centre de vaccination" in page
    # The switch to English keeps the centre and day chosen.
    switch = re.search(r'<a href="([^"]+)" lang="en"', page).group(1)  # type: ignore[union-attr]
    assert unescape(switch) == f"/portal/booking?centre=stade&day={tomorrow()}&lang=en"


def test_only_the_vaccination_centres_are_offered(portal: TestClient, records: RecordStore) -> None:
    """A hospital's other schedules of places (an MRI room) are no vaccination centre."""
    with records.writer() as writer:
        writer.update(
            "Schedule",
            "irm",
            {
                "resourceType": "Schedule",
                "id": "irm",
                "active": True,
                "serviceType": [
                    {"coding": [{"system": "http://snomed.info/sct", "code": "113091000"}]}
                ],
                "actor": [{"reference": "Location/irm", "display": "IRM, CHUM"}],
            },
        )
    page = unescape(portal.get("/portal/booking").text)
    assert re.findall(r'<option value="([^"]+)"', page) == ["stade"]
    assert "IRM" not in page


def _centre_in(records: RecordStore, centre_id: str, name: str, city: str, postal: str) -> None:
    """Another vaccination centre, with its place."""
    place = {
        "resourceType": "Location",
        "id": centre_id,
        "name": name,
        "address": {"city": city, "postalCode": postal},
    }
    schedule = {**centre_opening()[1], "id": centre_id}
    schedule["actor"] = [{"reference": f"Location/{centre_id}", "display": name}]
    with records.writer() as writer:
        writer.update("Location", centre_id, place)
        writer.update("Schedule", centre_id, schedule)


def _offered(portal: TestClient, **params: str) -> list[str]:
    response = portal.get("/portal/booking", params=params)
    assert response.status_code == 200, response.text
    return re.findall(r'<option value="([^"]+)"', response.text)


@pytest.mark.parametrize(
    ("near", "found"),
    [
        ("", ["laval", "stade"]),
        ("montreal", ["stade"]),  # a town, whatever its accents and case
        ("LAV", ["laval"]),  # the beginning of a town
        ("H1V", ["stade"]),  # a postal code's
        ("Centre de vaccination du Stade", ["stade"]),  # the centre's name
        ("Gatineau", []),
        ("Laval, Québec", []),  # a comma is a character of the town, not an "or"
        ("Laval|x", []),
        ("\\", []),
    ],
)
def test_a_patient_finds_the_centres_of_a_town_a_postal_code_or_a_name(
    portal: TestClient, records: RecordStore, near: str, found: list[str]
) -> None:
    _centre_in(records, "laval", "Centre Laval", "Laval", "H7N 5H9")
    assert _offered(portal, near=near) == found


def test_no_centre_found_says_what_to_try(portal: TestClient) -> None:
    page = portal.get("/portal/booking", params={"near": "Gatineau"}).text
    assert "No vaccination centre matches that" in page
    assert 'id="centre"' not in page


def test_a_long_list_says_it_is_cut_and_how_to_narrow_it(
    portal: TestClient, records: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _centre_in(records, "laval", "Centre Laval", "Laval", "H7N 5H9")
    monkeypatch.setattr(portal_booking, "MOST_CENTRES", 1)
    page = portal.get("/portal/booking").text
    assert len(re.findall(r"<option ", page)) == 1
    assert "Only the first 1 centres are listed" in page
    assert "Only the first" not in portal.get("/portal/booking", params={"near": "Laval"}).text


def test_the_centre_chosen_stays_offered_whatever_was_looked_for(
    portal: TestClient, records: RecordStore
) -> None:
    _centre_in(records, "laval", "Centre Laval", "Laval", "H7N 5H9")
    page = portal.get(
        "/portal/booking", params={"near": "Laval", "centre": "stade", "day": tomorrow()}
    ).text
    assert re.findall(r'<option value="([^"]+)"', page) == ["stade", "laval"]
    assert '<option value="stade" selected>' in page
    assert len(re.findall(r'name="slot"', page)) == 2  # its times


@pytest.mark.parametrize("centre", ["../stade", "stade,laval", "x" * 65, "irm"])
def test_a_centre_id_that_names_no_centre_chooses_none(portal: TestClient, centre: str) -> None:
    page = portal.get("/portal/booking", params={"centre": centre, "day": tomorrow()}).text
    assert 'name="slot"' not in page and " selected>" not in page


def test_a_search_too_long_is_refused(portal: TestClient) -> None:
    response = portal.get("/portal/booking", params={"near": "x" * 101})
    assert response.status_code == 400


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_a_centres_today_is_its_own(portal: TestClient, records: RecordStore, zone: str) -> None:
    """The day a centre's page opens on is today where the centre is: UTC+14 is already
    tomorrow from 10:00 UTC, UTC-11 still yesterday until 11:00 UTC (so that one of the
    two differs from UTC's today at any hour)."""
    _centre_in(records, "loin", "Centre lointain", "Loin", "00000")
    schedule = records.read("Schedule", "loin").resource()
    tz_code = {"url": "http://hl7.org/fhir/StructureDefinition/tz-code", "valueCode": zone}
    schedule["planningHorizon"]["_start"] = {"extension": [tz_code]}
    with records.writer() as writer:
        writer.update("Schedule", "loin", schedule)
    page = portal.get("/portal/booking", params={"centre": "loin"}).text
    there = datetime.now(ZoneInfo(zone)).date()
    assert f'id="day" name="day" value="{there.isoformat()}"' in page
    assert f'min="{there.isoformat()}"' in page
