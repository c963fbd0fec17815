"""The portal's booking page: the patient picks a vaccination centre and a day, sees the
free times, books one, sees their appointments to come and cancels one
(docs/booking.md, "In the portal").

It books as ``Appointment/$find`` and ``$book`` do (the same seats, the same rule under
the write lock, the same waiting room), under the patient's own authorisation, and logs
what it shows, as every page does. A centre's day is its local day, in the time zone its
Schedule's planning horizon names or is written in (``booking.local_day``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from html import escape
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from coffre.api.auth.enforce import target_for
from coffre.api.auth.scopes import Interaction
from coffre.api.portal.frame import (
    commit_for,
    current_record,
    guard_for,
    log_shown,
    redirect_to,
    searcher_for,
)
from coffre.api.portal.html import page
from coffre.api.portal.session import Session
from coffre.api.portal.summary import moment
from coffre.api.portal.text import word
from coffre.api.state import free_seats_of, records_of, waiting_room_of
from coffre.booking.book import OneToCome, begins_after, to_book, to_come_of
from coffre.booking.find import VACCINATION, FindQuery, open_to_all, proposal, utc_days
from coffre.booking.local_day import day_bounds, time_zone, wall_clock
from coffre.booking.slots import FREE, HOLDING, held_slots, schedule_of, slot_id
from coffre.exceptions import FhirError
from coffre.fhir.references import ID_PATTERN
from coffre.fhir.validation import validate
from coffre.fhir.values import whole_number
from coffre.ledger.leaf import LeafKind
from coffre.search import parse_criteria
from coffre.search.criteria import escape_value
from coffre.search.normalise import date_range
from coffre.search.plan import query_date
from coffre.service import RecordStore, Stored
from coffre.service.booking import book as book_seats
from coffre.service.booking import centre_zone
from coffre.service.conditions import NO_VERSION
from coffre.service.searching import Searcher
from coffre.service.stored import now_us
from coffre.service.writer import Writer

BOOKING = "/portal/booking"
TIMES_A_DAY = 1_000
"""The most times a day's list shows (a campaign's day: 144, every 5 minutes)."""
DAYS_AHEAD = 60
MOST_CENTRES = 50
"""The most centres the list offers: past that, the patient names a town, a postal code or
the centre (a campaign may open hundreds)."""
LONGEST_NEAR = 100
_DAY = timedelta(days=1)
_PLACE = ("address-city", "address-postalcode", "name")


def _centres(records: RecordStore, near: str) -> tuple[list[Stored], bool]:
    """The centres whose place's town, postal code or name begins with ``near`` (every one
    without it), by name, ``MOST_CENTRES`` at most; and whether more match."""
    if len(near) > LONGEST_NEAR:
        raise FhirError(400, "invalid", f"a town, postal code or name of {LONGEST_NEAR} at most")
    narrowings = (
        [[(f"actor:Location.{name}", escape_value(near))] for name in _PLACE] if near else [[]]
    )
    found = {c.id: c for narrowing in narrowings for c in _found_centres(records, narrowing)}
    centres = sorted(found.values(), key=lambda schedule: (_name(schedule), schedule.id))
    return centres[:MOST_CENTRES], len(centres) > MOST_CENTRES


def _centre(records: RecordStore, centre_id: str | None) -> Stored | None:
    """The centre of that Schedule id, if it is one."""
    if not centre_id or not ID_PATTERN.match(centre_id):
        return None
    return next(iter(_found_centres(records, [("_id", centre_id)])), None)


def _found_centres(records: RecordStore, narrowing: list[tuple[str, str]]) -> list[Stored]:
    """The active vaccination Schedules of places (a Location among their actors, no
    patient named) that the narrowing criteria find, one more than ``MOST_CENTRES`` at
    most."""
    criteria = parse_criteria([("active", "true"), ("service-type", VACCINATION), *narrowing])
    found = records.find("Schedule", criteria, limit=MOST_CENTRES + 1)
    return [s for s in found if _place(s.resource()) and open_to_all(s.resource())]


def _place(schedule: dict[str, Any]) -> dict[str, Any] | None:
    actors = schedule.get("actor", [])
    return next((a for a in actors if str(a.get("reference", "")).startswith("Location/")), None)


def _name(schedule: Stored) -> str:
    place = _place(schedule.resource()) or {}
    return str(place.get("display") or place.get("reference") or schedule.id)


def _day_query(schedule: Stored, day: date, now: int) -> FindQuery:
    """The free seats of the centre's local ``day``, from now on."""
    start, end = day_bounds(schedule.resource(), day)
    pairs = [("status", FREE), ("schedule", f"Schedule/{schedule.id}")]
    window_start = max(start, now)
    days = utc_days(window_start, end) if window_start < end else ()
    return FindQuery(pairs, window_start, end, days, None, TIMES_A_DAY)


def _today(centre: Stored | None) -> date:
    """Today where the centre is (in UTC until one is chosen): in Montreal, at 21:00,
    UTC is already tomorrow."""
    return datetime.now(UTC if centre is None else time_zone(centre.resource())).date()


def _asked_day(raw: str | None, today: date) -> date:
    """The day asked for, today when none; a 400 for one that is not a day to come (a
    day's slack either side: the form's bounds were those of UTC, or of another centre)."""
    if not raw:
        return today
    try:
        asked = date.fromisoformat(raw)
    except ValueError:
        raise FhirError(400, "invalid", "day is YYYY-MM-DD") from None
    if not today - _DAY <= asked <= today + timedelta(days=DAYS_AHEAD) + _DAY:
        raise FhirError(400, "invalid", f"day is within {DAYS_AHEAD} days from today")
    return asked


def _to_come(searcher: Searcher, patient_id: str, now: int) -> list[Stored]:
    """The patient's appointments to come (``to_come_of``: hers alone), soonest first."""
    records = searcher.records
    to_come = [
        stored
        for stored in searcher.compartment(("Appointment",), patient_id)
        if to_come_of(stored.resource(), patient_id, now, _held(records, stored.resource()))
    ]
    return sorted(to_come, key=lambda stored: query_date(stored.resource()["start"])[0])


def _held(records: RecordStore, appointment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Slots an Appointment holds, as they are now, read one by one."""
    slots = (current_record(records, "Slot", slot_id) for slot_id in held_slots(appointment))
    return (slot.resource() for slot in slots if slot is not None)


def centre_moment(records: RecordStore, appointment: dict[str, Any]) -> str:
    """An appointment's start as its centre's clocks read it, with the zone they are in
    (``2031-03-01 19:30 America/Montreal``): a seat written in UTC would otherwise say
    the next day. As booked (``summary.moment``) when no Schedule of its Slot says, or when
    it is no instant (a record written before validation held it to one)."""
    start = appointment.get("start")
    when = date_range(start) if isinstance(start, str) else None
    zone = None if when is None else _centre_zone(records, appointment)
    if when is None or zone is None:
        return moment(start)
    return f"{wall_clock(when[0], zone, '%Y-%m-%d %H:%M')} {zone}"


def _centre_zone(records: RecordStore, appointment: dict[str, Any]) -> tzinfo | None:
    """The time zone of the Schedule of the appointment's first Slot."""
    slot_ids = held_slots(appointment) or tuple(
        found for slot in appointment.get("slot", ()) if (found := slot_id(slot)) is not None
    )
    slot = current_record(records, "Slot", slot_ids[0]) if slot_ids else None
    return None if slot is None else centre_zone(records, slot.resource())


def _where(appointment: dict[str, Any]) -> str:
    for participant in appointment.get("participant", []):
        actor = participant.get("actor", {})
        if str(actor.get("reference", "")).startswith("Location/"):
            return str(actor.get("display") or actor["reference"])
    return ""


def _cancel_form(lang: str, csrf: str, stored: Stored, when: str) -> str:
    label = word(lang, "cancel_at").format(when=when)
    return (
        f'<form class="inline" method="post" action="{BOOKING}/cancel">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="appointment" value="{escape(stored.id)}">'
        f'<input type="hidden" name="version" value="{stored.version}">'
        f'<button type="submit" aria-label="{escape(label)}">{escape(word(lang, "cancel"))}'
        "</button></form>"
    )


def _appointments_section(records: RecordStore, lang: str, csrf: str, to_come: list[Stored]) -> str:
    """The appointments to come, each with its time (the centre's), its place and its
    cancel button."""
    body = f'<h2 id="to-come">{escape(word(lang, "to_come"))}</h2>'
    if not to_come:
        return body + f"<p>{escape(word(lang, 'none_to_come'))}</p>"
    times = [centre_moment(records, s.resource()) for s in to_come]
    items = "".join(
        f"<li><strong>{escape(when)}</strong> — "
        f"{escape(_where(s.resource()))} {_cancel_form(lang, csrf, s, when)}</li>"
        for s, when in zip(to_come, times, strict=True)
    )
    return body + f'<ul aria-labelledby="to-come">{items}</ul>'


def _near_form(lang: str, near: str, day: date) -> str:
    """The search of a centre by its town, postal code or name."""
    return (
        f'<h2 id="find">{escape(word(lang, "find_time"))}</h2>'
        f'<form method="get" action="{BOOKING}" role="search">'
        f'<label for="near">{escape(word(lang, "near"))}</label>'
        f'<input type="search" id="near" name="near" value="{escape(near)}"'
        f' maxlength="{LONGEST_NEAR}">'
        f'<input type="hidden" name="day" value="{day.isoformat()}">'
        f'<button type="submit">{escape(word(lang, "find_centre"))}</button></form>'
    )


def _choice_form(lang: str, choice: Choice, day: date, today: date) -> str:
    """The centres found and the day."""
    chosen, centres = choice.chosen, choice.centres
    if not centres:
        return f"<p>{escape(word(lang, 'no_centre'))}</p>"
    more = word(lang, "more_centres").format(most=MOST_CENTRES) if choice.more else ""
    options = "".join(
        f'<option value="{escape(c.id)}"{" selected" if chosen and c.id == chosen.id else ""}>'
        f"{escape(_name(c))}</option>"
        for c in centres
    )
    last = today + timedelta(days=DAYS_AHEAD)
    return (
        (f'<p role="note">{escape(more)}</p>' if more else "")
        + f'<form method="get" action="{BOOKING}">'
        f'<input type="hidden" name="near" value="{escape(choice.near)}">'
        f'<label for="centre">{escape(word(lang, "centre"))}</label>'
        f'<select id="centre" name="centre" required>{options}</select>'
        f'<label for="day">{escape(word(lang, "day"))}</label>'
        f'<input type="date" id="day" name="day" value="{day.isoformat()}"'
        f' min="{today.isoformat()}" max="{last.isoformat()}" required>'
        f'<button type="submit">{escape(word(lang, "show_times"))}</button></form>'
    )


def _clock(seat: Stored, zone: tzinfo) -> str:
    """A seat's start as the centre's clocks read it (a Slot may be written in UTC, or
    in another offset than the centre's)."""
    return wall_clock(query_date(str(seat.resource()["start"]))[0], zone)


def _times_section(
    lang: str, csrf: str, near: str, centre: Stored, day: date, seats: list[Stored]
) -> str:
    zone = time_zone(centre.resource())
    said = word(lang, "free_times").format(day=day.isoformat(), centre=_name(centre), zone=zone)
    body = f'<h2 id="times">{escape(said)}</h2>'
    if not seats:
        return body + f"<p>{escape(word(lang, 'no_free_time'))}</p>"
    buttons = "".join(
        f'<button type="submit" name="slot" value="{escape(seat.id)}">'
        f"{_clock(seat, zone)}</button> "
        for seat in seats
    )
    return body + (
        f'<form method="post" action="{BOOKING}" aria-labelledby="times">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="near" value="{escape(near)}">'
        f'<input type="hidden" name="centre" value="{escape(centre.id)}">'
        f'<input type="hidden" name="day" value="{day.isoformat()}">{buttons}</form>'
    )


async def booking(request: Request, session: Session, lang: str) -> Response:
    """GET: the appointments to come and the form to find a time (with the centres found
    and the free times of the centre and day asked); POST: book the time chosen."""
    if request.method == "POST":
        return await _book(request, session, lang)
    params = request.query_params
    said = next((f"{key}_done" for key in ("booked", "cancelled") if params.get(key)), "")
    return await _booking_page(request, session, lang, params, said)


@dataclass(frozen=True, slots=True)
class Choice:
    """What the patient looked for (``near``), the centres found (the one chosen first if
    it is not among them), whether more match than are listed, and the centre chosen."""

    near: str
    centres: list[Stored]
    more: bool
    chosen: Stored | None

    @classmethod
    def asked(cls, records: RecordStore, fields: Mapping[str, str]) -> Choice:
        near = fields.get("near", "").strip()
        centres, more = _centres(records, near)
        chosen = _centre(records, fields.get("centre"))
        if chosen is not None and chosen.id not in {c.id for c in centres}:
            centres = [chosen, *centres]
        return cls(near, centres, more, chosen)


async def _booking_page(
    request: Request,
    session: Session,
    lang: str,
    fields: Mapping[str, str],
    said: str = "",
    status: int = 200,
) -> Response:
    """The page, for the centre, day and search its ``fields`` (a query or a form) give."""
    records = records_of(request)
    guard = guard_for(records, session)
    now = now_us()
    choice = Choice.asked(records, fields)
    today = _today(choice.chosen)
    day = _asked_day(fields.get("day"), today)
    to_come = _to_come(searcher_for(records, session, guard), session.patient_id, now)
    chosen = choice.chosen
    body = ""
    if said:
        role = "alert" if status >= 400 else "status"
        body += f'<p role="{role}">{escape(word(lang, said))}</p>'
    body += _appointments_section(records, lang, session.csrf, to_come)
    body += _near_form(lang, choice.near, day) + _choice_form(lang, choice, day, today)
    seats: list[Stored] = []
    if chosen is not None:
        async with waiting_room_of(request).turn():
            seats, _ = free_seats_of(request).find(
                _day_query(chosen, day, now), guard.search_filter()
            )
        body += _times_section(lang, session.csrf, choice.near, chosen, day, seats)
    await log_shown(request, session, (LeafKind.SEARCH, [*to_come, *choice.centres, *seats]))
    return page(
        lang,
        word(lang, "booking"),
        body,
        path=_chosen(fields),
        current="booking",
        csrf=session.csrf,
        status=status,
    )


class Refused(FhirError):
    """A booking or a cancellation the portal refuses (409), with the words of the page
    that says why."""

    def __init__(self, said: str, diagnostics: str) -> None:
        super().__init__(409, "conflict", diagnostics)
        self.said = said


def _chosen(fields: Mapping[str, str]) -> str:
    """The page's address with what was looked for and chosen, for its language switch."""
    kept = {name: fields[name] for name in ("near", "centre", "day") if fields.get(name)}
    return f"{BOOKING}?{urlencode(kept)}" if kept else BOOKING


def _appointment_for(
    records: RecordStore, slot_id: str, patient_id: str, now: int
) -> dict[str, Any]:
    """The Appointment $find would propose for the seat, for the patient, to book: a seat
    to come of a centre the page offers (a form sent from a page older than the centre's
    closing, or written by hand, books nothing else)."""
    slot = current_record(records, "Slot", slot_id)
    if slot is None:  # none, or none by that id (deleted since, written by hand)
        raise Refused("no_such_time", f"Slot/{slot_id} is no seat here")
    schedule_id = schedule_of(slot.resource())
    schedule = None if schedule_id is None else _centre(records, schedule_id)
    if schedule is None:
        raise Refused("centre_closed", f"Slot/{slot_id} is no seat of an open centre")
    if not begins_after(slot.resource(), now):
        raise Refused("time_past", f"Slot/{slot_id} has begun")
    offer = proposal(slot_id, slot.resource(), schedule.resource(), f"Patient/{patient_id}")
    validate(offer)
    return to_book(offer)


def _said(refusal: FhirError) -> str:
    """The words of the page that says why a booking was refused (409)."""
    if isinstance(refusal, Refused):
        return refusal.said
    return "one_to_come" if isinstance(refusal, OneToCome) else "seat_taken"


async def _book(request: Request, session: Session, lang: str) -> Response:
    form = request.state.form
    records = records_of(request)
    patient_id, now = session.patient_id, now_us()
    try:
        appointment = _appointment_for(records, form.get("slot", ""), patient_id, now)
        guard_for(records, session).check(target_for(Interaction.CREATE, appointment, sent=True))
        async with waiting_room_of(request).turn():
            like = free_seats_of(request).like
            await commit_for(
                request,
                session,
                lambda writer: book_seats(writer, appointment, now, like),
            )
    except FhirError as error:
        if error.status != 409:
            raise
        said = _said(error)
        return await _booking_page(request, session, lang, form, said, 409)
    return redirect_to(f"{BOOKING}?booked=1")


async def cancel(request: Request, session: Session, lang: str) -> Response:
    """Cancel one of the patient's appointments to come, as it was shown (its version):
    its seat is free again."""
    form = request.state.form
    records = records_of(request)
    stored = current_record(records, "Appointment", form.get("appointment", ""))
    guard = guard_for(records, session)
    if stored is None or not guard.admits(stored, Interaction.UPDATE):
        raise FhirError(404, "not-found", "no such appointment")
    version = form.get("version", "")
    if stored.resource().get("status") not in HOLDING:  # cancelled already, in another tab
        return await _booking_page(request, session, lang, {}, "appointment_changed", 409)
    held = _held(records, stored.resource())
    if not to_come_of(stored.resource(), session.patient_id, now_us(), held):
        # a vaccination given is history
        return await _booking_page(request, session, lang, {}, "appointment_begun", 409)
    cancelled = {**stored.resource(), "status": "cancelled"}

    expected = whole_number(version)  # no version at all: nothing is cancelled (409)

    def job(writer: Writer) -> None:
        writer.update("Appointment", stored.id, cancelled, expected or NO_VERSION)

    try:
        await commit_for(request, session, job)
    except FhirError as error:
        if error.status != 412:
            raise
        return await _booking_page(request, session, lang, {}, "appointment_changed", 409)
    return redirect_to(f"{BOOKING}?cancelled=1")
