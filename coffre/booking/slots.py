"""What holds a slot, and when a slot may be held: no slot is ever booked twice.

A Slot is one place at one time (one vaccinator's five minutes). An Appointment holds the
Slots it names while its status is a holding one; at most one Appointment holds a Slot.
Coffre keeps each Slot's status in step with its holder: ``busy`` while held, ``free``
again once released (cancelled, deleted, moved to another slot). ``$book`` takes only a
free Slot: one that is ``busy-unavailable``, ``busy-tentative`` or ``entered-in-error`` is
not for booking.
"""

from __future__ import annotations

from typing import Any

from coffre.exceptions import FhirError
from coffre.fhir.references import parse_reference
from coffre.search import Criterion, parse_criteria

HOLDING = ("pending", "booked", "arrived", "checked-in", "fulfilled")
"""The Appointment statuses that hold their slots; ``proposed`` and ``waitlist`` do not
yet, ``cancelled``, ``noshow`` and ``entered-in-error`` no longer do."""

FREE, BUSY = "free", "busy"
BOOKED_WITH = ("start", "end", "slot", "participant", "serviceType")
"""What an Appointment holding Slots was booked with, which a patient's update leaves as
it is: she cancels it, and books another to change it."""
CANCELLED = "cancelled"


def slot_id(slot: dict[str, Any]) -> str | None:
    """The id of the Slot of this server an Appointment's ``slot`` element names; None for
    another server's (an absolute reference: the API makes those to its own base
    relative) or for no Slot."""
    reference = slot.get("reference", "")
    parsed = None if "://" in reference else parse_reference(reference)
    return parsed[1] if parsed is not None and parsed[0] == "Slot" else None


def schedule_of(slot: dict[str, Any]) -> str | None:
    """The id of the Schedule a Slot belongs to (``Schedule/<id>``); None when it names
    none."""
    kind, _, schedule_id = str(slot.get("schedule", {}).get("reference", "")).partition("/")
    return schedule_id if kind == "Schedule" and schedule_id else None


def held_slots(appointment: dict[str, Any]) -> tuple[str, ...]:
    """The ids of this server's Slots an Appointment holds, in its order: those it names
    while its status is a holding one."""
    if appointment.get("status") not in HOLDING:
        return ()
    ids = (slot_id(slot) for slot in appointment.get("slot", ()))
    return tuple(dict.fromkeys(found for found in ids if found is not None))


def unknown_slot(slot_id: str) -> FhirError:
    return FhirError(
        422,
        "not-found",
        f"Slot/{slot_id} does not exist on this server: book a slot Appointment/$find proposes",
        "Appointment.slot",
    )


def booked_elsewhere(slot_id: str) -> FhirError:
    return FhirError(
        409,
        "conflict",
        f"Slot/{slot_id} is already booked: choose another one (Appointment/$find lists the"
        " free slots)",
        "Appointment.slot",
    )


def books_through_book(slot_id: str) -> FhirError:
    """The refusal of a patient's write (REST, a Bundle's entry) that would take a Slot
    around $book, which keeps what she may book (a seat that exists, is free and is to
    come, one at a time)."""
    return FhirError(
        403,
        "forbidden",
        f"a patient's write does not take Slot/{slot_id}: book it through Appointment/$book"
        " (or the portal), which keeps the booking rules; an appointment is cancelled by an"
        " update of its status",
        "Appointment.slot",
    )


def patients_change(
    appointment_id: str, before: dict[str, Any], after: dict[str, Any]
) -> FhirError | None:
    """The refusal (403) of a patient's update of an Appointment that holds Slots, unless
    it keeps its status or cancels it, and changes nothing it was booked with
    (``BOOKED_WITH``): else she would move her seat's time into the past and book another
    vaccination, name a second patient to hide it from her count, or change its service,
    her seat still held. None when it does neither."""
    status = after.get("status")
    changed = next((name for name in BOOKED_WITH if before.get(name) != after.get(name)), None)
    if changed is None and status in (before.get("status"), CANCELLED):
        return None
    element = f"Appointment.{changed or 'status'}"
    said = f"changes {element}" if changed else f"makes it {status}"
    return FhirError(
        403,
        "forbidden",
        f"a patient's update of Appointment/{appointment_id}, which holds its seat, {said}:"
        f" she cancels it (status {CANCELLED}) and changes none of {', '.join(BOOKED_WITH)};"
        " to change it, cancel it and book another through Appointment/$book (or the portal)",
        element,
    )


def taken(slot: dict[str, Any]) -> dict[str, Any]:
    """A free Slot as its holder makes it."""
    return {**slot, "status": BUSY}


def released(slot: dict[str, Any]) -> dict[str, Any] | None:
    """A Slot its holder let go, free again; None when it is not ``busy`` (someone has
    since closed it: it stays as they left it)."""
    return {**slot, "status": FREE} if slot.get("status") == BUSY else None


def frees(before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    """Whether a client's write (``after``; None: a deletion) opens a Slot that was not
    free, or deletes it: only then may it take a slot from under its holder."""
    return before.get("status") != FREE and (after is None or after.get("status") == FREE)


def naming(slot_id: str) -> tuple[Criterion, ...]:
    """The criteria of the Appointments that name a Slot (those holding it among them:
    ``held_slots`` tells; one look-up where the statuses would add five)."""
    return parse_criteria([("slot", f"Slot/{slot_id}")])


def still_held(slot_id: str, deleted: bool) -> FhirError:
    """The refusal of a client's write that would free a Slot an Appointment holds."""
    what = "deleted" if deleted else "freed"
    return FhirError(
        409,
        "conflict",
        f"Slot/{slot_id} is held by an appointment: it is {what} only once that appointment"
        " is cancelled",
        "Slot.status",
    )


def seats_of_the_deleted(patient_id: str, holding: list[str]) -> FhirError:
    """The refusal of a Patient's deletion while appointments to come of theirs hold
    seats: a seat booked for nobody is a seat lost to the campaign."""
    named = ", ".join(f"Appointment/{appointment_id}" for appointment_id in holding[:5])
    more = f" and {len(holding) - 5} more" if len(holding) > 5 else ""
    return FhirError(
        409,
        "conflict",
        f"Patient/{patient_id} holds seats by appointments to come ({named}{more}): cancel"
        " them first, or their seats would be lost (coffre erase frees them itself)",
    )
