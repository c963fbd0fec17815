"""The vaccination campaign generator: valid FHIR, a Slot a seat a turn at local times,
imported once however often, and its times offered by $find and booked by $book."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from conftest import FHIR_JSON, put_resource
from starlette.testclient import TestClient

from coffre.cli.importer import Importer
from coffre.fhir.validation import validate
from coffre.service import RecordStore
from coffre.synth.campaign import TURNS_A_DAY, VENUES, campaign_bundles

WINTER, SUMMER = date(2031, 3, 3), date(2031, 7, 14)
VACCINATION = "http://snomed.info/sct|33879002"
ANNE = {"resourceType": "Patient", "id": "anne"}  # who books
Bundle = dict[str, Any]


def _resources(bundles: list[tuple[str, Bundle]], resource_type: str) -> list[dict[str, Any]]:
    return [
        entry["resource"]
        for _, bundle in bundles
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == resource_type
    ]


def test_each_site_and_day_is_a_valid_transaction_of_puts_at_fixed_ids() -> None:
    bundles = list(campaign_bundles(3, 2, 2, WINTER))
    assert [name for name, _ in bundles] == [
        f"campaign-{venue.key}-{day}"
        for venue in VENUES[:3]
        for day in ("2031-03-03", "2031-03-04")
    ]
    for _, bundle in bundles:
        assert validate(bundle) == "Bundle" and bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            assert entry["request"] == {
                "method": "PUT",
                "url": f"{resource['resourceType']}/{resource['id']}",
            }
    slot_ids = [slot["id"] for slot in _resources(bundles, "Slot")]
    assert len(slot_ids) == len(set(slot_ids)) == 3 * 2 * 2 * TURNS_A_DAY


def test_each_schedule_is_its_locations_and_each_slot_its_sites_vaccination() -> None:
    bundles = list(campaign_bundles(2, 1, 1, WINTER))
    locations = {location["id"]: location for location in _resources(bundles, "Location")}
    assert [location["address"]["city"] for location in locations.values()] == [
        "Montréal",
        "Paris",
    ]
    schedules = {schedule["id"]: schedule for schedule in _resources(bundles, "Schedule")}
    for schedule_id, schedule in schedules.items():
        assert schedule["actor"][0]["reference"] == f"Location/{schedule_id}"
        assert schedule_id in locations
    for slot in _resources(bundles, "Slot"):
        assert slot["status"] == "free"
        assert slot["schedule"]["reference"].removeprefix("Schedule/") in schedules
        coding = slot["serviceType"][0]["coding"][0]
        assert f"{coding['system']}|{coding['code']}" == VACCINATION


def _times(day: date, sites: int, seats: int) -> Counter[tuple[str, str]]:
    """How many Slots begin and end at each (start, end)."""
    bundles = list(campaign_bundles(sites, 1, seats, day))
    return Counter((slot["start"], slot["end"]) for slot in _resources(bundles, "Slot"))


def test_every_seat_has_a_slot_each_five_minutes_from_8_to_20_local_time() -> None:
    times = _times(WINTER, 2, 3)
    assert set(times.values()) == {3}
    montreal = sorted(t for t in times if t[0].endswith("-05:00"))
    paris = sorted(t for t in times if t[0].endswith("+01:00"))
    assert len(montreal) == len(paris) == TURNS_A_DAY == len(times) / 2
    assert montreal[0] == ("2031-03-03T08:00:00-05:00", "2031-03-03T08:05:00-05:00")
    assert montreal[1][0] == "2031-03-03T08:05:00-05:00"
    assert paris[-1] == ("2031-03-03T19:55:00+01:00", "2031-03-03T20:00:00+01:00")


def test_summer_times_carry_the_summer_offsets() -> None:
    offsets = {start[-6:] for start, _ in _times(SUMMER, 2, 1)}
    assert offsets == {"-04:00", "+02:00"}


def test_each_schedule_names_the_zone_its_horizon_is_written_in() -> None:
    """The tz-code the portal takes a centre's local day from agrees, in winter and in
    summer, with the offsets the campaign writes (by its own rules, not the tz database)."""
    for day in (WINTER, SUMMER):
        for schedule in _resources(list(campaign_bundles(len(VENUES), 1, 1, day)), "Schedule"):
            start = datetime.fromisoformat(schedule["planningHorizon"]["start"])
            [extension] = schedule["planningHorizon"]["_start"]["extension"]
            assert extension["url"] == "http://hl7.org/fhir/StructureDefinition/tz-code"
            zone = ZoneInfo(extension["valueCode"])
            assert start.utcoffset() == start.replace(tzinfo=zone).utcoffset(), schedule["id"]


def _files(tmp_path: Path, sites: int, days: int, seats: int) -> list[Path]:
    paths = []
    for name, bundle in campaign_bundles(sites, days, seats, WINTER):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_bytes(orjson.dumps(bundle))
    return paths


def test_importing_the_campaign_twice_writes_nothing_the_second_time(
    records: RecordStore, tmp_path: Path
) -> None:
    files = _files(tmp_path, 2, 2, 1)
    first = Importer(records).run(files)
    assert first.failures == []
    assert first.versions_written == 2 * 2 + 2 * 2 * TURNS_A_DAY  # a Location, a Schedule a site
    again = Importer(records).run(files)
    assert again.failures == [] and again.versions_written == 0


def test_find_offers_the_campaigns_times_and_book_takes_one(
    client: TestClient, records: RecordStore, tmp_path: Path
) -> None:
    assert Importer(records).run(_files(tmp_path, 2, 1, 2)).failures == []
    put_resource(client, ANNE)
    site = VENUES[0].key
    query = f"location=Location/{site}&start={WINTER}&service-type={VACCINATION}&_count=3"
    found = client.get(f"/fhir/Appointment/$find?{query}&patient=Patient/anne")
    assert found.status_code == 200, found.text
    offers = [entry["resource"] for entry in found.json()["entry"]]
    assert [offer["start"] for offer in offers] == [
        "2031-03-03T08:00:00-05:00",
        "2031-03-03T08:05:00-05:00",
        "2031-03-03T08:10:00-05:00",
    ]
    assert offers[0]["participant"][0]["actor"]["reference"] == f"Location/{site}"
    for _ in range(2):  # the two seats of 8:00
        booked = client.post("/fhir/Appointment/$book", json=offers[0], headers=FHIR_JSON)
        assert booked.status_code == 201, booked.text
    full = client.post("/fhir/Appointment/$book", json=offers[0], headers=FHIR_JSON)
    assert full.status_code == 409, full.text
    after = client.get(f"/fhir/Appointment/$find?{query}").json()["entry"]
    assert after[0]["resource"]["start"] == "2031-03-03T08:05:00-05:00"


def test_importing_again_frees_no_booked_seat(
    client: TestClient, records: RecordStore, tmp_path: Path
) -> None:
    """Once a seat is booked, its day's file would free it: that Bundle is refused whole,
    and the others import (unchanged) as before."""
    files = _files(tmp_path, 1, 2, 1)
    assert Importer(records).run(files).failures == []
    put_resource(client, ANNE)
    seat = f"{VENUES[0].key}-20310303-0800-1"
    appointment = {
        "resourceType": "Appointment",
        "status": "booked",
        "slot": [{"reference": f"Slot/{seat}"}],
        "participant": [{"actor": {"reference": "Patient/anne"}, "status": "accepted"}],
    }
    booked = client.post("/fhir/Appointment/$book", json=appointment, headers=FHIR_JSON)
    assert booked.status_code == 201, booked.text
    again = Importer(records).run(files)
    assert again.versions_written == 0
    [failure] = again.failures
    assert re.match(rf"{files[0]}: entry\[\d+\] \(PUT Slot\): Slot/{seat} is held by", failure)
    assert client.get(f"/fhir/Slot/{seat}").json()["status"] == "busy"


def test_a_day_s_slots_come_in_an_order_that_is_not_their_time_s_and_the_same_each_run() -> None:
    """The host sees the order of writes: in the order of time, a Slot's rank would give
    its time (docs/leakage.md, Booking)."""
    bundles = list(campaign_bundles(1, 1, 1, WINTER))
    starts = [slot["start"] for slot in _resources(bundles, "Slot")]
    assert starts != sorted(starts) and len(starts) == TURNS_A_DAY
    assert bundles == list(campaign_bundles(1, 1, 1, WINTER))
