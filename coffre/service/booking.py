"""The booking operations on the records: the free seats ``Appointment/$find`` offers,
and ``Appointment/$book``'s write, under the write lock."""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Any

from coffre.booking.book import (
    OneToCome,
    check_one_seat,
    check_to_come,
    names_vaccination,
    no_seat_left,
    other_seats,
    same_seat_kind,
    to_come_of,
    with_seats,
)
from coffre.booking.find import FindQuery, by_time, open_to_all, place_and_time, with_service
from coffre.booking.local_day import time_zone
from coffre.booking.slots import FREE, HOLDING, held_slots, schedule_of, unknown_slot
from coffre.exceptions import FhirError
from coffre.fhir.compartment import patient_of
from coffre.search import parse_criteria
from coffre.service.slots import current_slot
from coffre.service.stored import Outcome, Stored

if TYPE_CHECKING:
    from coffre.service.records import RecordStore
    from coffre.service.writer import Writer

_seats = random.SystemRandom()
SEATS_SECONDS = 5.0
CACHED_SEARCHES = 256
REMEMBERED_TIMES = 200_000
Seat = tuple[str, dict[str, Any]]


class FreeSeats:
    """The free seats $find offers. A day's seats at a place are one search, which opens
    every one of them (hundreds at a vaccination centre): its result is kept for
    ``SEATS_SECONDS``, shared by the crowd asking for that place and day, and each seat
    is read again, fresh and checked, before it is offered. A seat freed or opened since
    is offered within those seconds; one taken since is never offered.

    It also remembers the seats of each place and time its searches found (``like``), for
    $book to try another seat of a time taken meanwhile without a search under the write
    lock, where one search of a centre's day (720 seats) holds it 85 ms or more."""

    def __init__(self, records: RecordStore) -> None:
        self.records = records
        self._found: OrderedDict[tuple[tuple[str, str], ...], tuple[float, list[list[Seat]]]] = (
            OrderedDict()
        )
        self._seats_of: dict[tuple[Any, ...], set[str]] = {}
        self._lock = threading.Lock()  # $book reads it from the group commit's thread

    def like(self, slot: dict[str, Any]) -> frozenset[str] | None:
        """The ids of the seats of a Slot's place and time found by this process's
        searches; None when none found that place and time."""
        with self._lock:
            found = self._seats_of.get(place_and_time(slot))
            return None if found is None else frozenset(found)

    def _remember(self, groups: list[list[Seat]]) -> None:
        with self._lock:
            if len(self._seats_of) > REMEMBERED_TIMES:
                self._seats_of.clear()
            for group in groups:
                known = self._seats_of.setdefault(place_and_time(group[0][1]), set())
                known.update(slot_id for slot_id, _ in group)

    def _day(self, pairs: list[tuple[str, str]]) -> list[list[Seat]]:
        """A day's free seats grouped by place and time, earliest first, as searched at
        most ``SEATS_SECONDS`` ago."""
        key, now = tuple(pairs), time.monotonic()
        kept = self._found.get(key)
        if kept is not None and now - kept[0] < SEATS_SECONDS:
            return kept[1]
        found = self.records.find("Slot", parse_criteria(pairs))
        groups = by_time((stored.id, stored.resource()) for stored in found)
        self._remember(groups)
        self._found[key] = (now, groups)
        self._found.move_to_end(key)
        while len(self._found) > CACHED_SEARCHES:
            self._found.popitem(last=False)
        return groups

    def _still_free(
        self, group: list[Seat], admit: Callable[[Stored], bool] | None
    ) -> Stored | None:
        """A seat of the group still free, at random; those found taken leave it."""
        for seat in _seats.sample(group, len(group)):
            try:
                stored = self.records.read("Slot", seat[0])
            except FhirError:  # deleted since
                stored = None
            if stored is not None and stored.resource().get("status") == FREE:
                if admit is None or admit(stored):
                    return stored
                continue
            group.remove(seat)
        return None

    def find(
        self, query: FindQuery, admit: Callable[[Stored], bool] | None
    ) -> tuple[list[Stored], list[Stored]]:
        """The seats to offer, earliest first, one a place and time, and the Schedules they
        belong to, as ``admit`` lets the requester see them."""
        offered: list[Stored] = []
        zones: dict[str, tzinfo] = {}
        for day in query.days:
            for group in self._day(query.on(day)):
                if not group or not query.in_window(group[0][1], self._zone(query, group, zones)):
                    continue
                seat = self._still_free(group, admit)
                if seat is not None:
                    offered.append(seat)
                if len(offered) == query.count:
                    return offered, self._schedules(offered, admit)
        return offered, self._schedules(offered, admit)

    def _zone(self, query: FindQuery, group: list[Seat], zones: dict[str, tzinfo]) -> tzinfo:
        """The zone of the seats' centre (their Schedule's), when a bound of the query is
        a date, a day of the centre's; read once a $find."""
        if not query.local:
            return UTC
        slot = group[0][1]
        reference = str(schedule_of(slot))
        if reference not in zones:  # no such Schedule (or no longer): UTC's days
            zones[reference] = centre_zone(self.records, slot) or UTC
        return zones[reference]

    def _schedules(
        self, slots: list[Stored], admit: Callable[[Stored], bool] | None
    ) -> list[Stored]:
        references = {str(slot.resource().get("schedule", {}).get("reference")) for slot in slots}
        ids = sorted(r.removeprefix("Schedule/") for r in references if r.startswith("Schedule/"))
        if not ids:
            return []
        found = self.records.find("Schedule", parse_criteria([("_id", ",".join(ids))]))
        return [s for s in found if open_to_all(s.resource()) or admit is None or admit(s)]


SeatsLike = Callable[[dict[str, Any]], frozenset[str] | None]


def _seat(
    writer: Writer, slot_id: str, now_us: int, chosen: set[str], like: SeatsLike
) -> tuple[str, dict[str, Any]]:
    """The seat to take for ``slot_id``: itself while free, else a free seat of the same
    place and time not ``chosen`` (named by the booking, or taken for another Slot it
    names), among those ``like`` knows (searched for only when it knows none); a 409 when
    there is none."""
    slot = current_slot(writer, slot_id)
    if slot is None:
        raise unknown_slot(slot_id)
    check_to_come(slot_id, slot, now_us)
    if slot.get("status") == FREE:
        return slot_id, slot
    known = like(slot)
    if known is None:
        known = frozenset(other.id for other in writer.find("Slot", other_seats(slot)))
    others = sorted(known - chosen - {slot_id})
    for other_id in _seats.sample(others, len(others)):
        found = current_slot(writer, other_id)
        if found is not None and found.get("status") == FREE and same_seat_kind(slot, found):
            return other_id, found
    raise no_seat_left(slot_id, str(slot.get("status")))


def book(writer: Writer, appointment: dict[str, Any], now_us: int, like: SeatsLike) -> Outcome:
    """Book a valid Appointment (``booking.book.to_book``) on its slots or, for a slot
    taken meanwhile, on another seat of the same place and time (``like``: the seats a
    place and time is known to have). A patient books one seat, and holds one vaccination
    appointment to come at a time."""
    patient_id = patient_of(appointment)
    _check_patient(writer, patient_id)
    if writer.access.is_patient:
        check_one_seat(appointment)
    named = held_slots(appointment)
    seats: dict[str, tuple[str, dict[str, Any]]] = {}
    for slot_id in named:  # a replacement is no seat the booking names, nor one chosen
        kept = set(named) | {seat for seat, _ in seats.values()}
        seats[slot_id] = _seat(writer, slot_id, now_us, kept, like)
    booked = with_seats(appointment, seats)
    if writer.access.is_patient and patient_id is not None:
        _check_none_to_come(writer, patient_id, booked, now_us)
    return writer.create(booked, validated=True, booking=True)


def _is_vaccination(writer: Writer, appointment: dict[str, Any]) -> bool:
    """An Appointment of the vaccination service, or on a seat of it (its Slot's service,
    else its Schedule's: ``with_service``)."""
    return names_vaccination(appointment) or any(
        names_vaccination(_with_service(writer, slot)) for slot in _held(writer, appointment)
    )


def _with_service(writer: Writer, slot: dict[str, Any]) -> dict[str, Any]:
    """``with_service``, the Slot's Schedule read (as the transaction sees it) only when
    the Slot names no service."""
    if slot.get("serviceType"):
        return slot
    schedule_id = schedule_of(slot)
    stored = None if schedule_id is None else writer.latest("Schedule", schedule_id)
    return with_service(slot, None if stored is None or stored.deleted else stored.resource())


def _check_none_to_come(
    writer: Writer, patient_id: str, appointment: dict[str, Any], now_us: int
) -> None:
    """A 409 (``OneToCome``) for a vaccination while the patient holds one to come: those
    the portal lists as hers (``to_come_of``), under the write lock, where two bookings
    sent at once are one after the other."""
    if not _is_vaccination(writer, appointment):
        return
    criteria = parse_criteria([("patient", f"Patient/{patient_id}"), ("status", ",".join(HOLDING))])
    for held in writer.find("Appointment", criteria):
        resource = held.resource()
        if to_come_of(resource, patient_id, now_us, _held(writer, resource)) and _is_vaccination(
            writer, resource
        ):
            raise OneToCome(patient_id, held.id)


def _held(writer: Writer, appointment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Slots an Appointment holds, as the transaction sees them, read one by one."""
    slots = (current_slot(writer, slot_id) for slot_id in held_slots(appointment))
    return (slot for slot in slots if slot is not None)


def centre_zone(records: RecordStore, slot: dict[str, Any]) -> tzinfo | None:
    """The time zone of a Slot's centre: its Schedule's; None when it has no Schedule to
    read (none named, or none by that id)."""
    schedule_id = schedule_of(slot)
    try:
        schedule = None if schedule_id is None else records.read("Schedule", schedule_id)
    except FhirError:
        return None
    return None if schedule is None else time_zone(schedule.resource())


def _check_patient(writer: Writer, patient_id: str | None) -> None:
    """A 422 unless the patient who books has a record here: a seat taken for nobody is a
    seat lost to the campaign. (An erased patient's compartment takes no new record: 410.)"""
    patient = None if patient_id is None else writer.latest("Patient", patient_id)
    if patient is None or patient.deleted:
        said = "does not exist" if patient is None else "was deleted"
        raise FhirError(
            422,
            "not-found",
            f"Patient/{patient_id} {said} on this server: $book books for a patient whose"
            " record is here (create it first)",
            "Appointment.participant",
        )
