"""``Appointment/$find`` and ``Appointment/$book``: the booking of a campaign's slots
(docs/booking.md)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.access import commit, log_access
from coffre.api.auth.enforce import guard_of, target_for
from coffre.api.auth.scopes import Interaction
from coffre.api.negotiation import (
    check_format,
    prefer_return,
    query_pairs,
    read_json,
    refuse_parameters,
)
from coffre.api.responses import fhir_response, written_response
from coffre.api.routes import base_url
from coffre.api.state import free_seats_of, waiting_room_of
from coffre.booking.book import appointment_of, to_book
from coffre.booking.find import PARAMETERS, FindQuery, parse_find, proposal
from coffre.exceptions import FhirError
from coffre.fhir.bundles import fhir_bundle
from coffre.fhir.references import localise_standalone
from coffre.fhir.validation import check_url_type, resource_type_of, validate
from coffre.ledger.leaf import LeafKind
from coffre.service.booking import book as book_seats
from coffre.service.stored import Stored, now_us

_GENERAL = frozenset({"_format", "_pretty"})


async def find(request: Request) -> Response:
    """The next free times, as proposed Appointments (a searchset Bundle)."""
    check_format(request)
    pairs = query_pairs(request)
    refuse_parameters(
        pairs, "Appointment/$find", ", ".join(PARAMETERS), frozenset(PARAMETERS) | _GENERAL
    )
    guard = guard_of(request)
    for resource_type in ("Slot", "Schedule"):
        guard.check_type(Interaction.SEARCH, resource_type)
    query = parse_find([(n, v) for n, v in pairs if n not in _GENERAL], now_us())
    async with waiting_room_of(request).turn():
        slots, schedules = await _found(request, query)
    seen = {f"Schedule/{s.id}": s.resource() for s in schedules}
    entries = []
    for slot in slots:
        resource = slot.resource()
        schedule = seen.get(resource.get("schedule", {}).get("reference"))
        offer = proposal(slot.id, resource, schedule, query.patient)
        entries.append({"resource": offer, "search": {"mode": "match"}})
    return fhir_response(fhir_bundle("searchset", entries))


async def _found(request: Request, query: FindQuery) -> tuple[list[Stored], list[Stored]]:
    """The seats and Schedules $find hands out, logged."""
    found = free_seats_of(request).find(query, guard_of(request).search_filter())
    await log_access(request, LeafKind.SEARCH, [*found[0], *found[1]])
    return found


async def book(request: Request) -> Response:
    """Book an Appointment on its slots, or on other seats of their place and time."""
    check_format(request)
    refuse_parameters(query_pairs(request), "Appointment/$book", "its body only", _GENERAL)
    sent = await read_json(request, request.app.state.max_body_bytes)
    body = appointment_of(sent)
    check_url_type(resource_type_of(body), "Appointment")
    if body is sent:  # Parameters were validated whole, the Appointment in them too
        validate(body)
    base = base_url(request)
    localise_standalone(body, base)
    appointment: dict[str, Any] = to_book(body)
    if "id" in appointment:
        raise FhirError(
            400, "invalid", "$book makes a new Appointment: send it without an id", "Appointment.id"
        )
    guard_of(request).check(target_for(Interaction.CREATE, appointment, sent=True))
    async with waiting_room_of(request).turn():
        like = free_seats_of(request).like
        outcome = await commit(
            request, lambda writer: book_seats(writer, appointment, now_us(), like)
        )
    stored = outcome.stored
    location = f"{base}/{stored.reference}/_history/{stored.version}"
    return written_response(outcome, prefer_return(request), location)
