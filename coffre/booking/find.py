"""``Appointment/$find``: the times still free, as proposed Appointments that a client
completes with its patient and books with ``Appointment/$book`` (the operations of IHE
ITI Scheduling, with parameters of Coffre's own).

A campaign opens each time as several Slots, one per seat (a vaccinator each): $find
offers each place and time once, through one of its free seats chosen at random, so that
a crowd booking the same time spreads over its seats.

The index knows a Slot's start to the day: a day's seats are one look-up (``on``), and
the window's bounds are applied to the seats found (``in_window``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from coffre.booking.slots import FREE
from coffre.exceptions import FhirError
from coffre.fhir.references import parse_reference
from coffre.search.naming import record_patients
from coffre.search.normalise import date_range
from coffre.search.plan import query_date
from coffre.search.results import number, single

Pairs = list[tuple[str, str]]

DEFAULT_COUNT, MOST = 20, 100
DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AFTER_LAST_DAY_US = (date.max - EPOCH.date()).days * DAY_US + DAY_US
"""The end of 9999-12-31 in UTC: no window of $find reaches past the last day a date names."""
LONGEST_WINDOW_DAYS = 31
_EAST_US, _WEST_US = 14 * 3_600_000_000, 12 * 3_600_000_000
"""How far before and after UTC's a day's local midnight may fall (UTC+14, UTC-12)."""
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ACTORS = {"location": "Location", "practitioner": "Practitioner"}
PARAMETERS = ("start", "end", *_ACTORS, "schedule", "service-type", "patient", "_count")
_SLOT_DETAILS = ("serviceCategory", "serviceType", "specialty", "appointmentType")
VACCINATION = "http://snomed.info/sct|33879002"
"""A vaccination campaign's service, as a token: Administration of vaccine to produce
active immunity (SNOMED CT)."""


@dataclass(frozen=True, slots=True)
class FindQuery:
    """What $find was asked: the Slot search of the free seats (``slot_pairs``), its window
    (``[start_us, end_us)``) and the UTC days it covers, in order, the patient to propose
    the appointments for, and how many times to offer. A bound given as a date
    (``start_day``, ``end_day``) is that day's midnight where each centre is: the window
    is then narrowed in each centre's zone (``window``)."""

    slot_pairs: Pairs
    start_us: int
    end_us: int
    days: tuple[str, ...]
    patient: str | None
    count: int
    start_day: date | None = None
    end_day: date | None = None

    @property
    def local(self) -> bool:
        """Whether a bound is a date, whose midnight depends on the centre's zone."""
        return self.start_day is not None or self.end_day is not None

    def window(self, zone: tzinfo) -> tuple[int, int]:
        """``[start, end)`` for a centre whose clocks are in ``zone``."""
        start, end = self.start_us, self.end_us
        if self.start_day is not None:
            start = max(start, midnight(self.start_day, zone))
        if self.end_day is not None:
            end = min(end, midnight(self.end_day, zone))
        return start, end

    def in_window(self, slot: dict[str, Any], zone: tzinfo = UTC) -> bool:
        start, end = self.window(zone)
        return start <= query_date(slot["start"])[0] < end

    def on(self, day: str) -> Pairs:
        """The search of one day's seats: a look-up of that day's index tokens, where an
        open range (``ge``) would take every day of the site's schedule."""
        return [*self.slot_pairs, ("start", f"eq{day}")]


def _reference(name: str, raw: str, resource_type: str) -> str:
    """``Type/id`` from ``id`` or ``Type/id``; a 400 for a reference to another type."""
    parsed = parse_reference(raw if "/" in raw else f"{resource_type}/{raw}")
    if parsed is None or parsed[0] != resource_type:
        raise FhirError(
            400, "invalid", f"{name}={raw} names no {resource_type}: give {resource_type}/<id>"
        )
    return f"{resource_type}/{parsed[1]}"


def midnight(day: date, zone: tzinfo) -> int:
    """The start of ``day`` on the clocks of ``zone``, in microseconds since the epoch."""
    return (datetime.combine(day, time(0), zone) - EPOCH) // timedelta(microseconds=1)


def _date_only(raw: str | None) -> date | None:
    """The day a bound names when it is a date (``YYYY-MM-DD``), not a dateTime."""
    return date.fromisoformat(raw) if raw is not None and _DATE.fullmatch(raw) else None


@dataclass(frozen=True, slots=True)
class _Window:
    """``[start, end)`` in UTC (a date read as UTC's day), the days it may reach in any
    zone (``reach``), and the bounds given as dates."""

    start: int
    end: int
    reach: tuple[int, int]
    start_day: date | None
    end_day: date | None


def _window(pairs: Pairs, now_us: int) -> _Window:
    """From ``start`` (now at the earliest: a time gone is not offered) to ``end``, a day
    later by default, a month at most, and never past the last day a date names. A date
    is a centre's day: the days searched reach where any zone's midnight may fall."""
    raw_start, raw_end = single(pairs, "start"), single(pairs, "end")
    start_day, end_day = _date_only(raw_start), _date_only(raw_end)
    given_start = query_date(raw_start)[0] if raw_start else now_us
    start = max(now_us, given_start)
    if start >= _AFTER_LAST_DAY_US:
        raise FhirError(
            400, "invalid", f"start={raw_start} is after {date.max}, the last day a date names"
        )
    if raw_end is None and start_day is not None and start_day < date.max:
        end_day = start_day + timedelta(days=1)  # the day named
    day_after = (given_start if start_day else start) + DAY_US  # the date's, or the window's
    end = min(query_date(raw_end)[0] if raw_end else day_after, _AFTER_LAST_DAY_US)
    reach = (
        max(now_us, given_start - (_EAST_US if start_day else 0)),
        min(end + (_WEST_US if end_day else 0), _AFTER_LAST_DAY_US),
    )
    if raw_start and raw_end and _ends_before_it_starts(raw_start, raw_end):
        raise FhirError(400, "invalid", f"end={raw_end} is not after start={raw_start}")
    if reach[1] <= reach[0]:  # the end is gone (the window's start is now, or before it)
        said = f"end={raw_end}" if raw_end else f"the day of start={raw_start}"
        raise FhirError(400, "invalid", f"{said} is not after now: $find offers times to come")
    if end - start > LONGEST_WINDOW_DAYS * DAY_US:
        raise FhirError(
            400,
            "too-costly",
            f"$find looks at {LONGEST_WINDOW_DAYS} days at most: narrow start and end",
        )
    return _Window(start, end, reach, start_day, end_day)


def _ends_before_it_starts(raw_start: str, raw_end: str) -> bool:
    """Whether ``end`` is not after ``start`` in any centre's zone: a date is a centre's
    midnight, from UTC+14's to UTC-12's (two dates, of one centre's zone, compare as
    days): ``end=2026-12-10`` is after ``start=2026-12-09T20:00:00-05:00`` in Montreal."""
    start_day, end_day = _date_only(raw_start), _date_only(raw_end)
    if start_day is not None and end_day is not None:
        return end_day <= start_day
    latest_end = query_date(raw_end)[0] + (_WEST_US if end_day else 0)
    earliest_start = query_date(raw_start)[0] - (_EAST_US if start_day else 0)
    return latest_end <= earliest_start


def utc_days(start_us: int, end_us: int) -> tuple[str, ...]:
    """The UTC days of ``[start, end)``, counted in whole microseconds (a float's seconds
    would round the last microsecond of 9999-12-31 into a year no date holds)."""
    first = (EPOCH + timedelta(microseconds=start_us)).date()
    last = (EPOCH + timedelta(microseconds=end_us - 1)).date()
    return tuple((first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1))


def parse_find(pairs: Pairs, now_us: int) -> FindQuery:
    """The parameters of $find (``PARAMETERS``), each given once; a 400 names what is
    wrong."""
    window = _window(pairs, now_us)
    slot_pairs = [("status", FREE)]
    for name, resource_type in _ACTORS.items():
        raw = single(pairs, name)
        if raw is not None:
            slot_pairs.append(("schedule.actor", _reference(name, raw, resource_type)))
    schedule = single(pairs, "schedule")
    if schedule is not None:
        slot_pairs.append(("schedule", _reference("schedule", schedule, "Schedule")))
    service_type = single(pairs, "service-type")
    if service_type is not None:
        slot_pairs.append(("service-type", service_type))
    patient = single(pairs, "patient")
    count = number(pairs, "_count")
    if count == 0:
        raise FhirError(400, "invalid", f"_count=0 offers nothing: $find offers 1 to {MOST} times")
    return FindQuery(
        slot_pairs,
        window.start if window.start_day is None else now_us,
        window.end if window.end_day is None else _AFTER_LAST_DAY_US,
        utc_days(*window.reach),
        None if patient is None else _reference("patient", patient, "Patient"),
        DEFAULT_COUNT if count is None else min(count, MOST),
        window.start_day,
        window.end_day,
    )


def open_to_all(schedule: dict[str, Any]) -> bool:
    """Whether a Schedule names no patient (a centre's, a practitioner's): then whoever
    may find times sees it, as the place and people of the times it offers. R4 puts
    Schedule in the patient compartment (by its actor), so a patient's token would
    otherwise see none of a centre's: each is a record of nobody."""
    return not record_patients(schedule)


def place_and_time(slot: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two Slots seats of one place and time, the same to whoever books (their
    times compared as instants: ``14:00Z`` is ``09:00-05:00``)."""
    return (
        slot.get("schedule", {}).get("reference"),
        _instant(slot.get("start")),
        _instant(slot.get("end")),
        *(repr(slot.get(name)) for name in _SLOT_DETAILS),
    )


def _instant(value: Any) -> Any:
    found = date_range(value) if isinstance(value, str) else None
    return value if found is None else found[0]


def by_time(
    seats: Iterable[tuple[str, dict[str, Any]]],
) -> list[list[tuple[str, dict[str, Any]]]]:
    """The seats grouped by place and time, the earliest time first."""
    groups: dict[tuple[Any, ...], list[tuple[str, dict[str, Any]]]] = {}
    for slot_id, slot in seats:
        groups.setdefault(place_and_time(slot), []).append((slot_id, slot))
    return sorted(groups.values(), key=lambda group: _order(group[0][1]))


def _order(slot: dict[str, Any]) -> tuple[int, str]:
    start = query_date(slot["start"])[0]
    return start, str(slot.get("schedule", {}).get("reference"))


def with_service(slot: dict[str, Any], schedule: dict[str, Any] | None) -> dict[str, Any]:
    """A Slot with the service it offers: its own ``serviceType``, else its Schedule's (R4:
    a Slot's, when given, overrides its Schedule's), so that a seat that names none at a
    vaccination centre is booked as a vaccination, and counted as one."""
    if slot.get("serviceType") or schedule is None or not schedule.get("serviceType"):
        return slot
    return {**slot, "serviceType": schedule["serviceType"]}


def proposal(
    slot_id: str, slot: dict[str, Any], schedule: dict[str, Any] | None, patient: str | None
) -> dict[str, Any]:
    """A proposed Appointment for one seat: its time and service (``with_service``), the
    actors of its ``schedule`` (the place, the practitioner; None: one the requester may
    not see) and the patient, if one was named."""
    seat = with_service(slot, schedule)
    actors = [] if schedule is None else schedule.get("actor", [])
    appointment: dict[str, Any] = {"resourceType": "Appointment", "status": "proposed"}
    appointment.update({name: seat[name] for name in _SLOT_DETAILS if name in seat})
    appointment.update(start=slot["start"], end=slot["end"])
    appointment["slot"] = [{"reference": f"Slot/{slot_id}"}]
    people = [*actors, *([{"reference": patient}] if patient else [])]
    if people:
        appointment["participant"] = [{"actor": a, "status": "needs-action"} for a in people]
    return appointment
