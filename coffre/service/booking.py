"""The booking operations on the records: the free seats ``Appointment/$find`` offers,
and ``Appointment/$book``'s write, under the write lock."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coffre.booking.book import check_to_come, other_seats, same_seat_kind, with_seats
from coffre.booking.find import FindQuery, offered
from coffre.booking.slots import FREE, held_slots, not_bookable, unknown_slot
from coffre.search import parse_criteria
from coffre.service.searching import Scope
from coffre.service.stored import Outcome, Stored

if TYPE_CHECKING:
    from coffre.service.records import RecordStore
    from coffre.service.writer import Writer

_seats = random.SystemRandom()


def free_seats(
    records: RecordStore, query: FindQuery, admit: Callable[[Stored], bool] | None
) -> tuple[list[Stored], list[Stored]]:
    """The seats $find offers, earliest first, and the Schedules they belong to, as
    ``admit`` lets the requester see them."""
    scope = Scope(records.storage, admit=admit)
    found = records.find("Slot", parse_criteria(query.slot_pairs), scope)
    by_id = {stored.id: stored for stored in found}
    chosen = offered(((stored.id, stored.resource()) for stored in found), query.count, _seats)
    slots = [by_id[slot_id] for slot_id, _ in chosen]
    schedule_ids = {
        reference.removeprefix("Schedule/")
        for _, slot in chosen
        if (reference := slot.get("schedule", {}).get("reference", "")).startswith("Schedule/")
    }
    schedules = (
        records.find("Schedule", parse_criteria([("_id", ",".join(sorted(schedule_ids)))]), scope)
        if schedule_ids
        else []
    )
    return slots, schedules


def _seat(
    writer: Writer, slot_id: str, now_us: int, chosen: set[str]
) -> tuple[str, dict[str, Any]]:
    """The seat to take for ``slot_id``: itself while free, else a free seat of the same
    place and time not ``chosen`` already; a 409 when there is none."""
    stored = writer.latest("Slot", slot_id)
    if stored is None or stored.deleted:
        raise unknown_slot(slot_id)
    slot = stored.resource()
    check_to_come(slot_id, slot, now_us)
    if slot.get("status") == FREE:
        return slot_id, slot
    others = [
        (other.id, other.resource())
        for other in writer.find("Slot", other_seats(slot))
        if other.id not in chosen and same_seat_kind(slot, other.resource())
    ]
    if not others:
        raise not_bookable(slot_id, str(slot.get("status")))
    return _seats.choice(others)


def book(writer: Writer, appointment: dict[str, Any], now_us: int) -> Outcome:
    """Book a valid Appointment (``booking.book.to_book``) on its slots or, for a slot
    taken meanwhile, on another seat of the same place and time."""
    seats: dict[str, tuple[str, dict[str, Any]]] = {}
    for slot_id in held_slots(appointment):
        seats[slot_id] = _seat(writer, slot_id, now_us, {taken for taken, _ in seats.values()})
    return writer.create(with_seats(appointment, seats), validated=True)
