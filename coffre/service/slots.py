"""The booking rule (``coffre.booking.slots``), kept on every write: an Appointment takes
the Slots it comes to hold and releases those it lets go, in its own transaction, and no
client's write frees a Slot an Appointment still holds. Under the write lock nothing else
changes a Slot between its check and its write, in any process: no slot is booked twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coffre.booking.slots import (
    check_holdable,
    frees,
    held_slots,
    holders,
    released,
    still_held,
    taken,
)
from coffre.service.stored import Stored

if TYPE_CHECKING:
    from coffre.service.writer import Writer

KEPT_TYPES = frozenset({"Appointment", "Slot"})


def keep_slots(
    writer: Writer,
    resource_type: str,
    resource_id: str,
    current: Stored | None,
    resource: dict[str, Any] | None,
) -> None:
    """Before a client's write of ``resource`` (None: a deletion) over ``current``."""
    if resource_type == "Appointment":
        _follow_appointment(writer, current, resource)
    elif resource_type == "Slot" and _frees_a_held_slot(writer, resource_id, current, resource):
        raise still_held(resource_id, deleted=resource is None)


def _frees_a_held_slot(
    writer: Writer, slot_id: str, current: Stored | None, resource: dict[str, Any] | None
) -> bool:
    if current is None or current.deleted or not frees(current.resource(), resource):
        return False
    return bool(writer.find("Appointment", holders(slot_id)))


def _current_slot(writer: Writer, slot_id: str) -> dict[str, Any] | None:
    stored = writer.latest("Slot", slot_id)
    return None if stored is None or stored.deleted else stored.resource()


def _follow_appointment(
    writer: Writer, current: Stored | None, resource: dict[str, Any] | None
) -> None:
    before = held_slots(current.resource()) if current is not None and not current.deleted else ()
    after = held_slots(resource) if resource is not None else ()
    taking = {slot_id: _current_slot(writer, slot_id) for slot_id in after if slot_id not in before}
    for slot_id, slot in taking.items():  # every one checked before any is written
        check_holdable(slot_id, slot)
    for slot_id, slot in taking.items():
        assert slot is not None
        writer.write_consequence("Slot", slot_id, taken(slot))
    for slot_id in before:
        slot = None if slot_id in after else _current_slot(writer, slot_id)
        freed = None if slot is None else released(slot)
        if freed is not None:
            writer.write_consequence("Slot", slot_id, freed)
