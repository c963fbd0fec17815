"""The portal's pages: sign in, my record, who accessed it, notices, research use; its
routes (the booking page is booking.py's).

Each page reads the patient's compartment through the same RecordStore as the FHIR API,
and logs what it shows, on behalf of the patient, like any read.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coffre.api.auth import Authority
from coffre.api.auth.authority import SignInWait
from coffre.api.auth.enforce import Guard
from coffre.api.auth.scopes import Interaction, Role
from coffre.api.auth.signin import wait_minutes
from coffre.api.portal.booking import booking, cancel, centre_moment
from coffre.api.portal.frame import (
    SIGN_IN,
    commit_for,
    current_record,
    guard_for,
    here,
    lang_of,
    log_shown,
    next_page,
    redirect_to,
    remember_lang,
    searcher_for,
    signed_in,
    with_form,
)
from coffre.api.portal.html import page, table
from coffre.api.portal.session import (
    SIGN_IN_COOKIE,
    SIGN_IN_SECONDS,
    Session,
    close_session,
    open_session,
    posted_here,
    same,
    set_cookie,
    sign_in_token,
)
from coffre.api.portal.summary import SECTIONS, SUMMARY_TYPES, concept, day, shown
from coffre.api.portal.text import code_word, word
from coffre.api.state import records_of
from coffre.exceptions import FhirError
from coffre.fhir.names import human_name
from coffre.fhir.references import parse_reference
from coffre.ledger.leaf import LeafKind
from coffre.search.results import number
from coffre.service import RecordStore, Stored
from coffre.service.audit import is_break_glass
from coffre.service.consent import (
    current_consent,
    record_research_consent,
    refuses_research,
    research_consent_id,
)
from coffre.service.notices import FIRST_ACCESS, NOTICE_CATEGORY, notice_id, payload_text
from coffre.service.searching import everything
from coffre.service.writer import Writer

ACCESS_PAGE = 50
"""Accesses listed a page."""


# -- sign in and out --------------------------------------------------------------------


def _sign_in_page(
    request: Request, lang: str, token: str, error: str = "", status: int = 200, minutes: int = 0
) -> Response:
    asked = request.state.form.get("next") if request.method == "POST" else None
    then = next_page(asked or request.query_params.get("next"))
    message = word(lang, error).format(minutes=minutes) if error else ""
    alert = f'<p role="alert" id="error">{escape(message)}</p>' if error else ""
    if not error and request.query_params.get("signed_out"):
        alert = f'<p role="status">{escape(word(lang, "signed_out"))}</p>'
    elif not error and (ended := request.query_params.get("ended")):
        said = "session_ended" if ended == "form" else "session_over"
        alert = f'<p role="alert">{escape(word(lang, said))}</p>'
    described = ' aria-describedby="error" aria-invalid="true"' if error else ""
    body = (
        f'{alert}<form method="post" action="/portal/sign-in">'
        f'<input type="hidden" name="token" value="{escape(token)}">'
        f'<input type="hidden" name="next" value="{escape(then)}">'
        f'<label for="username">{escape(word(lang, "username"))}</label>'
        f'<input type="text" id="username" name="username" autocomplete="username" required{described}>'
        f'<label for="password">{escape(word(lang, "password"))}</label>'
        f'<input type="password" id="password" name="password" autocomplete="current-password"'
        f" required{described}>"
        f'<button type="submit">{escape(word(lang, "sign_in"))}</button></form>'
    )
    response = page(lang, word(lang, "sign_in_title"), body, path=here(request), status=status)
    set_cookie(request, response, SIGN_IN_COOKIE, token, SIGN_IN_SECONDS)
    return remember_lang(request, response)


async def sign_in(request: Request) -> Response:
    lang = lang_of(request)
    token = sign_in_token(request)
    if request.method == "GET":
        return _sign_in_page(request, lang, token)
    form = request.state.form
    if not posted_here(request) or not same(
        request.cookies.get(SIGN_IN_COOKIE, ""), form.get("token")
    ):
        return _sign_in_page(request, lang, token, "expired", 403)
    authority: Authority = request.app.state.authority
    try:
        user = await authority.sign_in(request, form.get("username", ""), form.get("password", ""))
    except SignInWait as wait:
        response = _sign_in_page(request, lang, token, "wait", 429, wait_minutes(wait.seconds))
        response.headers["Retry-After"] = str(wait.seconds)
        return response
    if user is None:
        return _sign_in_page(request, lang, token, "failed", 401)
    kind, _, patient_id = user.fhir_user.partition("/")
    if user.role != Role.PATIENT or kind != "Patient":
        return _sign_in_page(request, lang, token, "not_patient", 403)
    response = redirect_to(next_page(form.get("next")))
    open_session(request, response, user, patient_id)
    return response


async def sign_out(request: Request, session: Session, lang: str) -> Response:
    response = redirect_to(f"{SIGN_IN}?signed_out=1")
    close_session(request, response, session)
    return response


# -- pages ------------------------------------------------------------------------------


def _people(
    records: RecordStore, guard: Guard, references: list[str]
) -> tuple[dict[str, str], list[Stored]]:
    """The names of the professionals ``references`` name, and their records, opened to
    show those names (and logged as reads); a record the patient may not read shows none."""
    names: dict[str, str] = {}
    opened = []
    for reference in dict.fromkeys(references):
        parsed = parse_reference(reference)
        stored = current_record(records, *parsed) if parsed and parsed[0] != "Patient" else None
        if stored is not None and not guard.admits(stored, Interaction.READ):
            stored = None
        name = human_name(stored.resource()) if stored else ""
        if stored and name:
            names[reference] = name
            opened.append(stored)
    return names, opened


async def my_record(request: Request, session: Session, lang: str) -> Response:
    records = records_of(request)
    patient = current_record(records, "Patient", session.patient_id)
    searcher = searcher_for(records, session, guard_for(records, session))
    found = list(everything(searcher, session.patient_id, SUMMARY_TYPES))
    body, handed = "", [patient] if patient else []
    if patient is not None:
        resource = patient.resource()
        body += f"<p>{escape(human_name(resource))} — {escape(day(resource.get('birthDate')))}</p>"
    for section in SECTIONS:
        pairs = shown(section, found)
        handed += [stored for stored, _ in pairs]
        body += f'<section aria-labelledby="{section.title}"><h2 id="{section.title}">'
        body += f"{escape(word(lang, section.title))}</h2>"
        if not pairs:
            body += f"<p>{escape(word(lang, 'none'))}</p></section>"
            continue
        if section.limit is not None:
            body += f"<p>{escape(word(lang, 'recent_note').format(count=section.limit))}</p>"
        headings = [word(lang, "name"), word(lang, "date"), word(lang, section.third)]
        status = section.third == "status"  # a code in words; a value as it is
        rows = [
            (n, _when(records, stored, d), code_word(lang, third) if status else third)
            for stored, (n, d, third) in pairs
        ]
        body += table(word(lang, section.title), headings, rows) + "</section>"
    await log_shown(request, session, (LeafKind.SEARCH, handed))
    return page(
        lang, word(lang, "record"), body, path="/portal/", current="record", csrf=session.csrf
    )


def _when(records: RecordStore, stored: Stored, said: str) -> str:
    """A row's date, an appointment's as its centre's clocks read it (``centre_moment``)."""
    return (
        centre_moment(records, stored.resource()) if stored.resource_type == "Appointment" else said
    )


def _is_own(event: dict[str, Any], patient_id: str) -> bool:
    """Whether the patient themself made this access: the requestor is their record,
    acting as a patient. Any other party is listed, whatever its name or display says."""
    mine = f"Patient/{patient_id}"
    return any(
        agent.get("who", {}).get("reference") == mine
        and agent.get("role") == [{"text": str(Role.PATIENT)}]
        for agent in event.get("agent", [])
        if agent.get("requestor")
    )


def _who(lang: str, event: dict[str, Any], who: dict[str, Any], names: dict[str, str]) -> str:
    """Who accessed, in the patient's language, from the event's parts: the person's name
    and record, and the application they used, rather than the log's English text
    (``(clinician, via client ehr)``); Coffre's own actors, which name no record, by
    their translated name."""
    reference = who.get("reference")
    if not reference:  # Coffre itself, its operator: their names are translated
        return code_word(lang, str(who.get("display", "")))
    shown = f"{names[reference]} ({reference})" if reference in names else reference
    apps = [
        agent.get("who", {}).get("identifier", {}).get("value")
        for agent in event.get("agent", [])
        if not agent.get("requestor")
    ]
    app = next((name for name in apps if name), None)
    return f"{shown} — {word(lang, 'via').format(app=app)}" if app else shown


def _requestor(event: dict[str, Any]) -> dict[str, Any]:
    agent: dict[str, Any] = next((a for a in event.get("agent", []) if a.get("requestor")), {})
    return agent


def _access_row(
    lang: str, event: dict[str, Any], names: dict[str, str]
) -> tuple[str, str, str, str, str]:
    agent = _requestor(event)
    shown = _who(lang, event, agent.get("who", {}), names)
    roles = ", ".join(code_word(lang, concept(role)) for role in agent.get("role", []))
    interactions = ", ".join(code_word(lang, s.get("code", "")) for s in event.get("subtype", []))
    why = "; ".join(p.get("text") or concept(p) for p in event.get("purposeOfEvent", []) if p)
    if is_break_glass(event):
        why = f"{word(lang, 'break_glass')}: {why}" if why else word(lang, "break_glass")
    when = str(event.get("recorded", ""))[:16].replace("T", " ")
    return shown, roles, when, interactions, why


def _pages(lang: str, snapshot: int, offset: int, total: int) -> str:
    """Where the shown accesses stand among all, and links to the newer and older ones;
    the links keep the first page's ``_snapshot``, so that accesses made meanwhile shift
    nothing."""
    last = min(offset + ACCESS_PAGE, total)
    said = word(lang, "page_of").format(first=offset + 1, last=last, total=total)
    links = [
        f'<a href="/portal/access?_snapshot={snapshot}&amp;_offset={to}" rel="{rel}">'
        f"{escape(word(lang, key))}</a>"
        for key, rel, to, shown in (
            ("newer", "prev", max(0, offset - ACCESS_PAGE), offset > 0),
            ("older", "next", last, last < total),
        )
        if shown
    ]
    return f'<p>{escape(said)}</p><nav aria-label="{escape(word(lang, "pages"))}">{" ".join(links)}</nav>'


async def accesses(request: Request, session: Session, lang: str) -> Response:
    records = records_of(request)
    pairs = list(request.query_params.multi_items())
    now = records.log_followed()
    snapshot = min(number(pairs, "_snapshot") or now, now)  # never past the log's end
    offset = number(pairs, "_offset") or 0
    patient = current_record(records, "Patient", session.patient_id)
    events = records.access_history(session.patient_id, snapshot) if patient else []
    others = [e for e in events if not _is_own(e, session.patient_id)]
    others.sort(key=lambda event: not is_break_glass(event))  # stable: newest first within
    if others and offset >= len(others):  # past the end (a link kept too long): the last page
        offset = (len(others) - 1) // ACCESS_PAGE * ACCESS_PAGE
    listed = others[offset : offset + ACCESS_PAGE]
    names, people = _people(
        records,
        guard_for(records, session),
        [_requestor(e).get("who", {}).get("reference", "") for e in listed],
    )
    body = f"<p>{escape(word(lang, 'access_intro'))}</p>"
    if listed:
        headings = [word(lang, k) for k in ("who", "role", "when", "action", "why")]
        classes = ["glass" if is_break_glass(e) else "" for e in listed]
        rows = [_access_row(lang, e, names) for e in listed]
        body += table(word(lang, "access"), headings, rows, classes)
        body += _pages(lang, snapshot, offset, len(others))
    else:
        body += f"<p>{escape(word(lang, 'no_access'))}</p>"
    own = len(events) - len(others)
    if own:
        body += f"<p>{escape(word(lang, 'own_views').format(count=own))}</p>"
    await log_shown(request, session, (LeafKind.READ, [patient, *people] if patient else []))
    return page(
        lang, word(lang, "access"), body, path="/portal/access", current="access", csrf=session.csrf
    )


def _is_notice(records: RecordStore, stored: Stored, patient_id: str) -> bool:
    """A first-access notice Coffre wrote: its category, and the id Coffre keys on the
    pair it tells of, which no app can make up (a patient's app could otherwise put a
    notice from anyone on the page)."""
    resource = stored.resource()
    sender = resource.get("sender", {}).get("reference", "")
    return stored.id == notice_id(records, sender, patient_id) and any(
        coding.get("system") == NOTICE_CATEGORY and coding.get("code") == FIRST_ACCESS
        for category in resource.get("category", [])
        for coding in category.get("coding", [])
    )


async def notices(request: Request, session: Session, lang: str) -> Response:
    records = records_of(request)
    guard = guard_for(records, session)
    found = searcher_for(records, session, guard).compartment(
        ("Communication",), session.patient_id
    )
    kept = [s for s in found if _is_notice(records, s, session.patient_id)]
    kept.sort(key=lambda s: str(s.resource().get("sent", "")), reverse=True)
    resources = [s.resource() for s in kept]
    senders = [r.get("sender", {}).get("reference", "") for r in resources]
    names, people = _people(records, guard, senders)
    body = f"<p>{escape(word(lang, 'notices_intro'))}</p>"
    if kept:
        headings = [word(lang, "date"), word(lang, "from"), word(lang, "message")]
        rows = [
            (day(r.get("sent")), names.get(sender, sender), payload_text(r, lang))
            for r, sender in zip(resources, senders, strict=True)
        ]
        body += table(word(lang, "notices"), headings, rows)
    else:
        body += f"<p>{escape(word(lang, 'no_notices'))}</p>"
    await log_shown(request, session, (LeafKind.SEARCH, kept), (LeafKind.READ, people))
    return page(
        lang,
        word(lang, "notices"),
        body,
        path="/portal/notices",
        current="notices",
        csrf=session.csrf,
    )


def _version(stored: Stored | None) -> str:
    """The research choice's version as the form carries it: "0" before any choice."""
    return str(stored.version) if stored is not None and not stored.deleted else "0"


async def research(request: Request, session: Session, lang: str) -> Response:
    if request.method == "GET":
        saved = bool(request.query_params.get("saved"))
        return await _research_page(request, session, lang, "saved" if saved else "")
    form = request.state.form
    choice = form.get("optOut")
    if choice not in ("true", "false"):
        raise FhirError(400, "invalid", "optOut is true or false")

    def job(writer: Writer) -> bool:
        """Record the choice unless it changed since the form was shown (in another tab)."""
        consent_id = research_consent_id(writer.records, session.patient_id)
        if _version(writer.latest("Consent", consent_id)) != form.get("version"):
            return False
        record_research_consent(writer, session.patient_id, choice == "true")
        return True

    if await commit_for(request, session, job):
        return redirect_to("/portal/research?saved=1")
    return await _research_page(request, session, lang, "stale", 409)


async def _research_page(
    request: Request, session: Session, lang: str, said: str = "", status: int = 200
) -> Response:
    """The patient's research choice and the form to change it; ``said``: the outcome
    of the form just sent, if any."""
    stored = current_consent(records_of(request), session.patient_id)
    consent = stored.resource() if stored else {}
    refusing = bool(stored) and refuses_research(consent, session.patient_id)
    body = ""
    if said:
        role = "alert" if status >= 400 else "status"
        body += f'<p role="{role}">{escape(word(lang, said))}</p>'
    body += f"<p>{escape(word(lang, 'research_intro'))}</p>"
    body += f'<p id="research-state"><strong>{escape(word(lang, "refusing" if refusing else "not_refusing"))}</strong>'
    if consent.get("dateTime"):
        body += " " + escape(word(lang, "since").format(date=day(consent["dateTime"])))
    body += "</p>"
    body += (
        '<form method="post" action="/portal/research">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
        f'<input type="hidden" name="version" value="{_version(stored)}">'
        f'<input type="hidden" name="optOut" value="{"false" if refusing else "true"}">'
        f'<button type="submit" id="switch">{escape(word(lang, "accept" if refusing else "refuse"))}</button>'
        "</form>"
    )
    if stored is not None:
        await log_shown(request, session, (LeafKind.READ, [stored]))
    return page(
        lang,
        word(lang, "research"),
        body,
        path="/portal/research",
        current="research",
        csrf=session.csrf,
        status=status,
    )


def portal_routes() -> list[Route]:
    """Under /portal."""
    return [
        Route("/", signed_in(my_record), methods=["GET"]),
        Route("/sign-in", with_form(sign_in), methods=["GET", "POST"]),
        Route("/sign-out", with_form(signed_in(sign_out, shows_record=False)), methods=["POST"]),
        Route("/access", signed_in(accesses), methods=["GET"]),
        Route("/notices", signed_in(notices), methods=["GET"]),
        Route("/research", with_form(signed_in(research)), methods=["GET", "POST"]),
        Route("/booking", with_form(signed_in(booking)), methods=["GET", "POST"]),
        Route("/booking/cancel", with_form(signed_in(cancel)), methods=["POST"]),
    ]
