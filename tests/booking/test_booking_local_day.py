"""A centre's local day: its zone named by R4's tz-code extension, else the offset its
planning horizon is written with, and days of 23 or 25 hours when summer time begins or
ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coffre.booking.local_day import day_bounds, time_zone

TZ_CODE = "http://hl7.org/fhir/StructureDefinition/tz-code"
WINTER_START = "2031-01-05T08:00:00-05:00"


def _schedule(code: Any = None, start: Any = WINTER_START) -> dict[str, Any]:
    horizon: dict[str, Any] = {"start": start}
    if code is not None:
        horizon["_start"] = {"extension": [{"url": TZ_CODE, "valueCode": code}]}
    return {"resourceType": "Schedule", "planningHorizon": horizon}


def _utc(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int(moment.timestamp()) * 1_000_000


def test_the_day_summer_time_begins_in_montreal_is_23_hours_from_local_midnight() -> None:
    # 9 March 2031, the second Sunday of March: clocks go from 2:00 to 3:00.
    start, end = day_bounds(_schedule("America/Montreal"), date(2031, 3, 9))
    assert (start, end) == (_utc("2031-03-09T05:00:00Z"), _utc("2031-03-10T04:00:00Z"))


def test_the_day_summer_time_ends_in_paris_is_25_hours() -> None:
    # 26 October 2031, the last Sunday of October: clocks go from 3:00 back to 2:00.
    start, end = day_bounds(_schedule("Europe/Paris"), date(2031, 10, 26))
    assert (start, end) == (_utc("2031-10-25T22:00:00Z"), _utc("2031-10-26T23:00:00Z"))


def test_a_summer_day_of_a_horizon_written_in_winter_is_in_summer_time() -> None:
    """00:30 on 14 July in Montreal is 04:30 UTC: on its own day, not the one before, as the
    horizon's winter offset alone would put it."""
    start, end = day_bounds(_schedule("America/Montreal"), date(2031, 7, 14))
    assert start == _utc("2031-07-14T04:00:00Z") <= _utc("2031-07-14T04:30:00Z") < end
    offset_only = day_bounds(_schedule(), date(2031, 7, 14))
    assert offset_only == (_utc("2031-07-14T05:00:00Z"), _utc("2031-07-15T05:00:00Z"))


@pytest.mark.parametrize("code", ["Nope/Zone", "../etc/passwd", "/etc/localtime", "", 5, "America"])
def test_a_zone_this_machine_does_not_know_falls_back_to_the_written_offset(code: Any) -> None:
    assert day_bounds(_schedule(code), date(2031, 7, 14))[0] == _utc("2031-07-14T05:00:00Z")


@pytest.mark.parametrize(
    "schedule",
    [
        {"resourceType": "Schedule"},
        {"resourceType": "Schedule", "planningHorizon": "soon"},
        _schedule(start="2031-01-05"),
        _schedule(start="not a time"),
        {"resourceType": "Schedule", "planningHorizon": {"_start": {"extension": "x"}}},
    ],
)
def test_a_schedule_that_says_no_zone_keeps_utc_days(schedule: dict[str, Any]) -> None:
    assert time_zone(schedule) == UTC
    assert day_bounds(schedule, date(2031, 7, 14)) == (
        _utc("2031-07-14T00:00:00Z"),
        _utc("2031-07-15T00:00:00Z"),
    )


@given(
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)),
    code=st.sampled_from(["America/Montreal", "Europe/Paris", "Pacific/Chatham", "UTC"]),
)
def test_a_day_runs_from_local_midnight_to_the_next(day: date, code: str) -> None:
    start, end = day_bounds(_schedule(code), day)
    zone = time_zone(_schedule(code))
    first = datetime.fromtimestamp(start / 1_000_000, zone)
    after = datetime.fromtimestamp(end / 1_000_000, zone)
    assert (first.date(), first.time().isoformat()) == (day, "00:00:00")
    assert (after.date(), after.time().isoformat()) == (day + timedelta(days=1), "00:00:00")
    assert timedelta(hours=22) < timedelta(microseconds=end - start) < timedelta(hours=26)
