"""The booking rule (``coffre.booking.slots``), kept on every write: an Appointment takes
the Slots it comes to hold and releases those it lets go, in its own transaction, and no
client's write frees a Slot an Appointment still holds. Under the write lock nothing else
changes a Slot between its check and its write, in any process: no slot is booked twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coffre.booking.book import begins_after
from coffre.booking.slots import (
    BUSY,
    FREE,
    HOLDING,
    booked_elsewhere,
    books_through_book,
    frees,
    held_slots,
    naming,
    patients_change,
    released,
    seats_of_the_deleted,
    still_held,
    taken,
)
from coffre.search import parse_criteria
from coffre.service.stored import Stored, now_us

if TYPE_CHECKING:
    from coffre.service.writer import Writer


def keep_slots(
    writer: Writer,
    resource_type: str,
    resource_id: str,
    current: Stored | None,
    resource: dict[str, Any] | None,
    booking: bool = False,
) -> None:
    """Before a client's write of ``resource`` (None: a deletion) over ``current``
    (``booking``: $book's, which checked its seats); of a type other than Appointment and
    Slot, nothing but for a Patient's deletion."""
    if resource_type == "Appointment":
        _follow_appointment(writer, resource_id, current, resource, booking)
    elif resource_type == "Slot":
        _check_slot_write(writer, resource_id, current, resource)
    elif resource_type == "Patient" and resource is None:
        _check_patient_deletion(writer, resource_id)


def _check_patient_deletion(writer: Writer, patient_id: str) -> None:
    """A patient whose appointments hold seats to come is not deleted (the Appointments
    would keep them, for a patient no longer here)."""
    criteria = parse_criteria([("patient", f"Patient/{patient_id}"), ("status", ",".join(HOLDING))])
    now = now_us()
    holding = [
        appointment.id
        for appointment in writer.find("Appointment", criteria)
        if any(
            (slot := current_slot(writer, slot_id)) is not None and begins_after(slot, now)
            for slot_id in held_slots(appointment.resource())
        )
    ]
    if holding:
        raise seats_of_the_deleted(patient_id, sorted(holding))


def _holders(writer: Writer, slot_id: str, other_than: str = "") -> list[Stored]:
    """The Appointments holding a Slot, but ``other_than``."""
    found = writer.find("Appointment", naming(slot_id))
    return [
        appointment
        for appointment in found
        if appointment.id != other_than and slot_id in held_slots(appointment.resource())
    ]


def _check_slot_write(
    writer: Writer, slot_id: str, current: Stored | None, resource: dict[str, Any] | None
) -> None:
    """A held Slot is neither freed nor deleted; one written anew for an Appointment
    already holding it (a transaction runs its POSTs before its PUTs, an import its files
    in any order) is written ``busy``."""
    if current is None or current.deleted:
        if resource is not None and resource.get("status") == FREE and _holders(writer, slot_id):
            resource["status"] = BUSY
    elif frees(current.resource(), resource) and _holders(writer, slot_id):
        raise still_held(slot_id, deleted=resource is None)


def _held_by_another(
    writer: Writer, slot_id: str, slot: dict[str, Any] | None, appointment_id: str
) -> bool:
    """Whether another Appointment holds the Slot: never a free one; one not free may be
    so for want of a holder (busy as an import wrote it, before its Appointment); one not
    (yet) here may be held by an Appointment written before it, as this one would be."""
    if slot is not None and slot.get("status") == FREE:
        return False
    return bool(_holders(writer, slot_id, other_than=appointment_id))


def current_slot(writer: Writer, slot_id: str) -> dict[str, Any] | None:
    """A Slot as the transaction sees it; None when it does not exist (or no longer)."""
    stored = writer.latest("Slot", slot_id)
    return None if stored is None or stored.deleted else stored.resource()


def _release(writer: Writer, slot_id: str) -> None:
    slot = current_slot(writer, slot_id)
    freed = None if slot is None else released(slot)
    if freed is not None:
        writer.write_consequence("Slot", slot_id, freed)


def _follow_appointment(
    writer: Writer,
    appointment_id: str,
    current: Stored | None,
    resource: dict[str, Any] | None,
    booking: bool,
) -> None:
    """Take the Slots the Appointment comes to hold, refusing one another holds; let go
    of those it no longer holds. A Slot not (yet) here is held once it is written. A
    patient takes a Slot through $book only, which keeps what she may book, and cancels
    an Appointment holding one but changes nothing it was booked with."""
    before = held_slots(current.resource()) if current is not None and not current.deleted else ()
    after = held_slots(resource) if resource is not None else ()
    if before and resource is not None and writer.access.is_patient and not booking:
        assert current is not None
        refusal = patients_change(appointment_id, current.resource(), resource)
        if refusal is not None:
            raise refusal
    taking = {slot_id: current_slot(writer, slot_id) for slot_id in after if slot_id not in before}
    if taking and writer.access.is_patient and not booking:
        raise books_through_book(next(iter(taking)))
    for slot_id, slot in taking.items():  # every one checked before any is written
        if _held_by_another(writer, slot_id, slot, appointment_id):
            raise booked_elsewhere(slot_id)
    for slot_id, slot in taking.items():
        if slot is not None and slot.get("status") == FREE:
            writer.write_consequence("Slot", slot_id, taken(slot))
    for slot_id in before:
        if slot_id not in after:
            _release(writer, slot_id)


def release_held_by(writer: Writer, patient_id: str, comp: bytes) -> None:
    """Free the Slots held by the patient's Appointments sealed in their compartment
    ``comp``, before its erasure leaves them unreadable (and out of every search) and their
    seats taken for good. An Appointment naming other patients too, sealed under the shared
    key, survives the erasure and keeps holding its seats."""
    criteria = parse_criteria([("patient", f"Patient/{patient_id}")])
    for appointment in writer.find("Appointment", criteria):
        if appointment.comp == comp:
            for slot_id in held_slots(appointment.resource()):
                _release(writer, slot_id)
