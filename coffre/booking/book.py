"""``Appointment/$book``: what a booking request must say, and the seat it may take
instead of the one it names when a crowd took that one first."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from coffre.booking.find import VACCINATION, place_and_time
from coffre.booking.slots import BUSY, FREE, HOLDING, held_slots, slot_id
from coffre.exceptions import FhirError
from coffre.fhir.compartment import compartment_patients, patient_of
from coffre.fhir.parameters import operation_parameters
from coffre.fhir.validation import validate
from coffre.search import Criterion, parse_criteria
from coffre.search.plan import query_date

BOOKABLE = ("proposed", "pending", "booked")
"""The statuses of an Appointment sent to $book: it is booked whatever it said."""


_RESOURCE_NAMES = {"appointment-resource": "resource", "appt-resource": "resource"}
_SHAPE = (
    "Parameters with one appointment-resource, the Appointment to book (or the Appointment itself)"
)


def appointment_of(body: Any) -> Any:
    """The Appointment of a $book request: the Parameters' ``appointment-resource`` (as
    IHE ITI Scheduling names it; ``appt-resource`` in the Argonaut Scheduling IG before
    it), or the Appointment itself. Parameters that are not valid are a 422 naming the
    element at fault, as any resource."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return body
    validate(body)
    given = operation_parameters(body, "$book", _RESOURCE_NAMES, _SHAPE)
    if len(given) != 1:
        raise FhirError(400, "invalid", f"$book takes {_SHAPE}")
    return given[0][1]


def to_book(appointment: dict[str, Any]) -> dict[str, Any]:
    """A valid Appointment as $book books it: status ``booked``; 422 unless it names a
    slot of this server and its patient."""
    status = appointment.get("status")
    if status not in BOOKABLE:
        raise FhirError(
            422,
            "business-rule",
            f"$book books an appointment that is {', '.join(BOOKABLE)}, not {status}",
            "Appointment.status",
        )
    booked = {**appointment, "status": "booked"}
    if "participant" in booked:  # the patient books, the schedule's free seat takes her
        booked["participant"] = [_accepted(p) for p in booked["participant"]]
    if not held_slots(booked):
        raise FhirError(
            422,
            "required",
            "$book needs the Slot to book: Appointment.slot naming Slot/<id> of this server, as"
            " Appointment/$find proposes it",
            "Appointment.slot",
        )
    patients = compartment_patients(booked)
    if len(patients) != 1:
        said = (
            f"names {len(patients)} patients: $book books for one, the patient who books"
            if patients
            else "needs the patient who books: a participant whose actor is Patient/<id>"
        )
        raise FhirError(422, "required", f"$book {said}", "Appointment.participant")
    return booked


def _accepted(participant: dict[str, Any]) -> dict[str, Any]:
    if participant.get("status") in ("needs-action", "tentative"):
        return {**participant, "status": "accepted"}
    return participant


def no_seat_left(slot_id: str, status: str) -> FhirError:
    """The refusal of a Slot not free when no other seat of its time is: taken (busy),
    or closed."""
    if status == BUSY:
        said = f"Slot/{slot_id} is already booked, and so is every other seat at that time"
        return FhirError(
            409,
            "conflict",
            f"{said}: choose another time (Appointment/$find lists the free ones)",
            "Appointment.slot",
        )
    return FhirError(
        409,
        "conflict",
        f"Slot/{slot_id} is {status}, not open for booking: choose a free slot"
        " (Appointment/$find lists them)",
        "Appointment.slot",
    )


def begins_after(resource: dict[str, Any], now_us: int) -> bool:
    """Whether a Slot or an Appointment has a start, after ``now_us``."""
    start = resource.get("start")
    return isinstance(start, str) and query_date(start)[0] > now_us


def to_come_of(
    appointment: dict[str, Any], patient_id: str, now_us: int, slots: Iterable[dict[str, Any]]
) -> bool:
    """Whether an Appointment is the patient's alone (one naming other patients too is
    hidden from her, whom she cannot cancel), holds its time and is to come: its start, or
    that of a Slot it holds (``slots``, as they stand, read only when its own start is
    past: one a clinician's write moved into the past holds its seat still), is after
    now. What the portal lists as hers to come, and what her one vaccination at a time
    counts."""
    return (
        appointment.get("status") in HOLDING
        and patient_of(appointment) == patient_id
        and (begins_after(appointment, now_us) or any(begins_after(s, now_us) for s in slots))
    )


def names_vaccination(resource: dict[str, Any]) -> bool:
    """Whether an Appointment's or a Slot's ``serviceType`` is a vaccination."""
    system, _, code = VACCINATION.partition("|")
    return any(
        isinstance(concept, dict)
        and any(
            isinstance(coding, dict)
            and coding.get("system") == system
            and coding.get("code") == code
            for coding in concept.get("coding", ())
        )
        for concept in resource.get("serviceType", ())
    )


def check_one_seat(appointment: dict[str, Any]) -> None:
    """A patient books one seat: several Slots in one Appointment are a longer visit,
    which a clinician books, or a patient's way of taking a time's every seat."""
    if len(held_slots(appointment)) > 1:
        raise FhirError(
            422,
            "business-rule",
            "a patient books one seat at a time: name one Slot (Appointment/$find proposes one"
            " each time)",
            "Appointment.slot",
        )


class OneToCome(FhirError):
    """The refusal of a patient's second vaccination appointment to come: else one patient,
    booking again and again, could take a centre's every seat."""

    def __init__(self, patient_id: str, held_id: str) -> None:
        super().__init__(
            409,
            "conflict",
            f"Patient/{patient_id} holds a vaccination appointment to come already"
            f" (Appointment/{held_id}): one at a time; cancel it to book another",
            "Appointment.participant",
        )


def check_to_come(slot_id: str, slot: dict[str, Any], now_us: int) -> None:
    """A 409 for a Slot whose time has begun."""
    if not begins_after(slot, now_us):
        raise FhirError(
            409,
            "conflict",
            f"Slot/{slot_id} began at {slot['start']}: book a time to come (Appointment/$find)",
            "Appointment.slot",
        )


def other_seats(slot: dict[str, Any]) -> tuple[Criterion, ...]:
    """The criteria of the free Slots of a Slot's schedule that begin when it does."""
    schedule = slot.get("schedule", {}).get("reference", "")
    return parse_criteria(
        [("schedule", schedule), ("start", f"eq{slot['start']}"), ("status", FREE)]
    )


def same_seat_kind(slot: dict[str, Any], other: dict[str, Any]) -> bool:
    return place_and_time(slot) == place_and_time(other)


def with_seats(
    appointment: dict[str, Any], seats: dict[str, tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """The Appointment naming, for each Slot it named, the seat it takes (``seats``: the id
    asked for to the id and Slot taken), and their start and end when it gave none; 422
    for a start or end it gave that is not theirs (a patient told another time than the
    seat's would come at that time)."""
    booked = {**appointment}
    booked["slot"] = [
        {**slot, "reference": f"Slot/{seats[asked][0]}"}
        if (asked := slot_id(slot)) is not None and asked in seats
        else slot
        for slot in appointment["slot"]
    ]
    taken = [slot for _, slot in seats.values()]
    if not taken:
        return booked
    times = {
        "start": min(taken, key=lambda slot: query_date(slot["start"])[0])["start"],
        "end": max(taken, key=lambda slot: query_date(slot["end"])[0])["end"],
    }
    for element, seats_time in times.items():
        given = booked.setdefault(element, seats_time)
        if query_date(given)[0] != query_date(seats_time)[0]:
            raise FhirError(
                422,
                "business-rule",
                f"Appointment.{element} is not the {element} of the Slots it books: leave start"
                " and end out, and $book gives the Slots' times",
                f"Appointment.{element}",
            )
    return booked
